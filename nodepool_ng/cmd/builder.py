"""`nodepool-builder`: the image builder daemon.

    nodepool-builder -c FILE [-s SECURE] [-f] [-p PIDFILE] [-l LOGCONFIG]
                     [--build-workers N] [--upload-workers M]

Without `-f` it detaches (double fork) after the config loaded, and logs to
/var/log/nodepool/nodepool-builder.log unless `-l` names a logging config
(`nodepool_ng.runtime.daemon`). SIGTERM/SIGINT stop it cleanly;
SIGHUP re-reads the config now (`systemctl reload`); SIGUSR2 dumps thread stacks. Errors are
one line on stderr with exit status 1.

Under systemd (`Type=notify`) it sends READY=1 once its workers run, and WATCHDOG=1 while
its loops make progress (`nodepool_ng.runtime.watchdog`).
"""

from __future__ import annotations

import argparse
import faulthandler
import logging
import sys
from collections.abc import Sequence

from nodepool_ng.builder.service import Builder, BuilderTiming
from nodepool_ng.cmd import add_version_option
from nodepool_ng.cmd.startup import config_problem
from nodepool_ng.errors import NodepoolError
from nodepool_ng.runtime import daemon, install_signal_handlers, sdnotify
from nodepool_ng.runtime.watchdog import Watchdog

PROG = "nodepool-builder"
LOG_LEVELS = daemon.LogLevels(logging.INFO, daemon.LIBRARY_LOGGERS, logging.WARNING,
                              logging.INFO)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=PROG, description="Nodepool image builder.")
    daemon.add_daemon_options(p)
    p.add_argument("--build-workers", type=int, default=1, help="build threads (default 1)")
    p.add_argument("--upload-workers", type=int, default=4, help="upload threads (default 4)")
    # Check intervals in seconds (upstream hard-codes 10/10/60); tests shorten them.
    p.add_argument("--build-interval", type=float, default=10.0, help=argparse.SUPPRESS)
    p.add_argument("--upload-interval", type=float, default=10.0, help=argparse.SUPPRESS)
    p.add_argument("--cleanup-interval", type=float, default=60.0, help=argparse.SUPPRESS)
    p.add_argument("--config-interval", type=float, default=5.0, help=argparse.SUPPRESS)
    p.add_argument("--upload-retry-base", type=float, default=2.0, help=argparse.SUPPRESS)
    add_version_option(p)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    timing = BuilderTiming(
        build_interval=args.build_interval,
        upload_interval=args.upload_interval,
        cleanup_interval=args.cleanup_interval,
        config_interval=args.config_interval,
        upload_retry_base=args.upload_retry_base,
    )
    try:
        daemon.setup_logging(args, LOG_LEVELS)
        builder = Builder(
            args.config,
            args.secure,
            build_workers=args.build_workers,
            upload_workers=args.upload_workers,
            timing=timing,
        )
        config = builder.watcher.load()  # fail before detaching if the config is bad
        problem = config_problem(config, args.config)
        if problem is None and not config.images_dir:
            problem = f"{args.config}: images-dir: required by nodepool-builder"
        if problem is not None:
            raise daemon.StartError(problem)
        # Relative images-dir and elements-dir are relative to the working directory: keep it.
        daemon.detach(PROG, args, workdir=None)
    except (daemon.StartError, NodepoolError) as e:
        return daemon.fail(PROG, e)
    with daemon.pidfile(args.pidfile):
        return _run(builder)


def _run(builder: Builder) -> int:
    def stop() -> None:
        sdnotify.notify("STOPPING=1")
        builder.stop()

    # A watchdog kill (SIGABRT) or a crash in C code writes every thread's stack to stderr
    # (the journal under systemd).
    faulthandler.enable(all_threads=True)
    install_signal_handlers(stop, reload=builder.reload_config)
    try:
        builder.start()
    except NodepoolError as e:
        logging.getLogger("nodepool_ng.builder").error("Cannot start: %s", e)
        builder.stop()
        return daemon.fail(PROG, e)
    # start() returned with the build, upload and cleanup workers and the scheduler running.
    sdnotify.notify("READY=1", f"STATUS={builder.num_build_workers} build, "
                    f"{builder.num_upload_workers} upload workers")
    try:
        Watchdog.from_environment([builder.problem]).run(builder.wait)
    finally:
        builder.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
