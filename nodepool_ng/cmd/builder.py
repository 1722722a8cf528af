"""`nodepool-builder`: the image builder daemon.

    nodepool-builder -c FILE [-s SECURE] [-f] [-p PIDFILE] [-l LOGCONFIG]
                     [--build-workers N] [--upload-workers M]

Without `-f` it detaches (double fork) after the config loaded. SIGTERM/SIGINT stop it cleanly;
SIGHUP re-reads the config now (`systemctl reload`); SIGUSR2 dumps thread stacks. Errors are
one line on stderr with exit status 1.
"""

from __future__ import annotations

import argparse
import logging
import logging.config
import os
import sys
from collections.abc import Sequence

from nodepool_ng import __version__
from nodepool_ng.builder.service import Builder, BuilderTiming
from nodepool_ng.cmd.startup import config_problem
from nodepool_ng.errors import NodepoolError
from nodepool_ng.runtime import install_signal_handlers

DEFAULT_CONFIG = "/etc/nodepool/nodepool.yaml"


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="nodepool-builder", description="Nodepool image builder.")
    p.add_argument("-c", dest="config", default=DEFAULT_CONFIG, help="path to config file")
    p.add_argument("-s", dest="secure", help="path to secure file")
    p.add_argument("-l", dest="logconfig", help="path to log config file (logging.config ini)")
    p.add_argument("-p", dest="pidfile", help="write the daemon's pid to this file")
    p.add_argument("-f", dest="foreground", action="store_true", help="run in the foreground")
    p.add_argument("-d", dest="debug", action="store_true", help="debug logging")
    p.add_argument("--build-workers", type=int, default=1, help="build threads (default 1)")
    p.add_argument("--upload-workers", type=int, default=4, help="upload threads (default 4)")
    # Check intervals in seconds (upstream hard-codes 10/10/60); tests shorten them.
    p.add_argument("--build-interval", type=float, default=10.0, help=argparse.SUPPRESS)
    p.add_argument("--upload-interval", type=float, default=10.0, help=argparse.SUPPRESS)
    p.add_argument("--cleanup-interval", type=float, default=60.0, help=argparse.SUPPRESS)
    p.add_argument("--config-interval", type=float, default=5.0, help=argparse.SUPPRESS)
    p.add_argument("--upload-retry-base", type=float, default=2.0, help=argparse.SUPPRESS)
    p.add_argument("--version", action="version", version=f"nodepool_ng {__version__}")
    return p


def setup_logging(args: argparse.Namespace) -> None:
    if args.logconfig:
        logging.config.fileConfig(args.logconfig, disable_existing_loggers=False)
        return
    logging.basicConfig(
        level=logging.DEBUG if args.debug else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    # openstacksdk / keystoneauth / boto3 are chatty at DEBUG (library loggers).
    for name in ("keystoneauth", "openstack", "urllib3", "kazoo", "apscheduler", "boto3",
                 "botocore"):
        logging.getLogger(name).setLevel(logging.WARNING if not args.debug else logging.INFO)


def _daemonize() -> None:
    if os.fork() > 0:
        os._exit(0)
    os.setsid()
    if os.fork() > 0:
        os._exit(0)
    devnull = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1, 2):
        os.dup2(devnull, fd)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        setup_logging(args)
    except (OSError, ValueError, KeyError) as e:
        print(f"nodepool-builder: error: log config {args.logconfig}: {e}", file=sys.stderr)
        return 1
    timing = BuilderTiming(
        build_interval=args.build_interval,
        upload_interval=args.upload_interval,
        cleanup_interval=args.cleanup_interval,
        config_interval=args.config_interval,
        upload_retry_base=args.upload_retry_base,
    )
    try:
        builder = Builder(
            args.config,
            args.secure,
            build_workers=args.build_workers,
            upload_workers=args.upload_workers,
            timing=timing,
        )
        config = builder.watcher.load()  # fail before detaching if the config is bad
    except NodepoolError as e:
        print(f"nodepool-builder: error: {e}", file=sys.stderr)
        return 1
    problem = config_problem(config, args.config)
    if problem is None and not config.images_dir:
        problem = f"{args.config}: images-dir: required by nodepool-builder"
    if problem is not None:
        print(f"nodepool-builder: error: {problem}", file=sys.stderr)
        return 1
    if not args.foreground:
        _daemonize()
    if args.pidfile:
        with open(args.pidfile, "w") as f:
            f.write(f"{os.getpid()}\n")
    install_signal_handlers(builder.stop, reload=builder.reload_config)
    try:
        builder.start()
    except NodepoolError as e:
        logging.getLogger("nodepool_ng.builder").error("Cannot start: %s", e)
        print(f"nodepool-builder: error: {e}", file=sys.stderr)
        builder.stop()
        return 1
    try:
        while not builder.wait(1.0):
            pass
    finally:
        builder.stop()
        if args.pidfile:
            try:
                os.unlink(args.pidfile)
            except OSError:
                pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
