"""One launcher in a process of its own, with test intervals (the CLI takes none):

    python -m tests.chaos.launcher_proc -c nodepool.yaml --clouds-yaml clouds.yaml \
        --hostname launcher-1 [--option cleanup_interval=2.0 ...]

The options start from tests/launcher/harness.py's FAST set; `--option NAME=FLOAT` overrides
one `LauncherOptions` field. SIGTERM/SIGINT stop cleanly (the daemon's handlers); SIGKILL is
what the chaos test sends. Logs go to stdout, like `nodepool-launcher -f`.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

from nodepool_ng.launcher.service import Launcher, LauncherOptions
from nodepool_ng.runtime.signals import install_signal_handlers
from tests.launcher.harness import FAST


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("-c", dest="config", required=True)
    parser.add_argument("--clouds-yaml", required=True)
    parser.add_argument("--hostname", required=True)
    parser.add_argument("--option", action="append", default=[], metavar="NAME=FLOAT")
    args = parser.parse_args(argv)
    options: dict[str, float] = dict(FAST)
    for item in args.option:
        name, value = item.split("=", 1)
        options[name] = float(value)
    logging.basicConfig(
        level=logging.INFO,
        stream=sys.stdout,
        format="%(asctime)s %(levelname)s %(threadName)s %(name)s: %(message)s",
    )
    for noisy in ("kazoo", "openstack", "keystoneauth", "urllib3", "paramiko", "stevedore"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    launcher = Launcher(
        args.config,
        options=LauncherOptions(hostname=args.hostname, clouds_yaml=args.clouds_yaml, **options),
    )
    install_signal_handlers(launcher.stop)
    sys.setswitchinterval(0.001)  # as nodepool-launcher does
    launcher.start()
    print("LAUNCHER-STARTED", flush=True)
    while not launcher.wait(1.0):
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
