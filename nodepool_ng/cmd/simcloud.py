"""`nodepool-simcloud`: serve simulated OpenStack clouds, or inspect a running one.

    nodepool-simcloud --config etc/simcloud.yaml --clouds-yaml /tmp/clouds.yaml [--listen ADDR]
    nodepool-simcloud inspect --url http://127.0.0.1:PORT {servers,ports,floating-ips,images,
                                                           summary,stats,faults}
    nodepool-simcloud faults --url URL [--error-rate SERVICE=RATE ...] [--server-error-rate R]

Serving runs in the foreground, logging to stderr. SIGTERM/SIGINT stop it; SIGUSR2 dumps thread
stacks; SIGHUP is logged and ignored (the profile file is read once). Errors are one line on
stderr (`nodepool-simcloud: error: ...`). Exit codes: 0 ok, 1 runtime failure, 2 bad arguments
or bad profile file. Under systemd (`Type=notify`) it sends READY=1 once the clouds listen and
the clouds.yaml is written.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import threading
from typing import Any

from nodepool_ng.cmd import add_version_option
from nodepool_ng.runtime import daemon, sdnotify
from nodepool_ng.runtime.signals import install_signal_handlers
from nodepool_ng.simcloud.client import AdminClient, AdminError
from nodepool_ng.simcloud.profile import ProfileError, load_profile_file
from nodepool_ng.simcloud.service import SimCloudService

PROG = "nodepool-simcloud"
LOG_LEVELS = daemon.LogLevels(logging.WARNING)
INSPECT = ("servers", "ports", "floating-ips", "images", "networks", "summary", "stats",
           "faults")


def _serve(args: argparse.Namespace) -> int:
    try:
        profiles = load_profile_file(args.config)
    except ProfileError as e:
        daemon.fail(PROG, f"{args.config}: {e}")
        return 2
    try:
        service = SimCloudService(profiles, listen=args.listen)
        service.start()
    except (ValueError, OSError) as e:
        return daemon.fail(PROG, f"cannot listen: {e}")
    stop = threading.Event()
    install_signal_handlers(stop.set)
    try:
        service.write_clouds_yaml(args.clouds_yaml)
        for p in profiles:
            print(f"simcloud {p.name}: {service.url(p.name)} ({p.address_model}, "
                  f"{'/'.join(p.image_formats)} by {p.image_upload})", flush=True)
        print(f"clouds.yaml written to {args.clouds_yaml}", flush=True)
        sdnotify.notify("READY=1", f"STATUS=serving {len(profiles)} clouds")
        stop.wait()
    finally:
        service.stop()
    return 0


def _inspect(args: argparse.Namespace) -> int:
    client = AdminClient(args.url)
    what = args.what.replace("-", "_")
    result: Any = getattr(client, what)()
    print(json.dumps(result, indent=2, sort_keys=True))
    return 0


def _faults(args: argparse.Namespace) -> int:
    rates: dict[str, float] = {}
    for item in args.error_rate or []:
        service, _, rate = item.partition("=")
        try:
            rates[service] = float(rate)
        except ValueError:
            daemon.fail(PROG, f"--error-rate {item}: expected SERVICE=RATE")
            return 2
    result = AdminClient(args.url).set_faults(
        error_rate=rates or None, server_error_rate=args.server_error_rate,
        slow_rate=args.slow_rate, slow_delay=args.slow_delay)
    print(json.dumps(result, indent=2, sort_keys=True))
    return 0


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=PROG,
                                description="Simulated OpenStack clouds on loopback.")
    p.add_argument("--config", help="cloud profile file (YAML)")
    p.add_argument("--clouds-yaml", help="where to write the clouds.yaml for openstacksdk")
    p.add_argument("--listen", default="127.0.0.1", help="loopback address to bind")
    p.add_argument("--debug", action="store_true", help="debug logging")
    add_version_option(p)
    sub = p.add_subparsers(dest="command")
    i = sub.add_parser("inspect", help="list a running cloud's resources")
    i.add_argument("--url", required=True, help="the cloud's base URL http://127.0.0.1:PORT")
    i.add_argument("what", choices=INSPECT)
    f = sub.add_parser("faults", help="change fault injection of a running cloud")
    f.add_argument("--url", required=True)
    f.add_argument("--error-rate", action="append", metavar="SERVICE=RATE")
    f.add_argument("--server-error-rate", type=float)
    f.add_argument("--slow-rate", type=float)
    f.add_argument("--slow-delay", type=float)
    return p


def main(argv: list[str] | None = None) -> int:
    p = parser()
    args = p.parse_args(argv)
    daemon.setup_logging(args, LOG_LEVELS)
    try:
        if args.command == "inspect":
            return _inspect(args)
        if args.command == "faults":
            return _faults(args)
    except AdminError as e:
        return daemon.fail(PROG, e)
    if not args.config or not args.clouds_yaml:
        p.print_usage(sys.stderr)
        daemon.fail(PROG, "--config and --clouds-yaml are required to serve")
        return 2
    return _serve(args)


if __name__ == "__main__":
    sys.exit(main())
