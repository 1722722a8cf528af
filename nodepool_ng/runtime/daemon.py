"""The start-up every console script shares: common options, logging, detaching, pidfile.

`nodepool-launcher` and `nodepool-builder` use all of it, `nodepool-simcloud` (always in the
foreground) and the `nodepool` CLI its options and logging. Where the logs go:

- `-l FILE`: that Python logging config (`.yaml`/`.yml`: `dictConfig`, else the ini format of
  `fileConfig`), whatever else is given;
- otherwise stderr, while in the foreground (`-f`, the CLI, simcloud, and a daemon until it
  detaches, so that the operator sees why it cannot start);
- otherwise, once a daemon has detached, `/var/log/nodepool/<program>.log` (upstream's
  directory), appended to through a `WatchedFileHandler` so that logrotate may move it. The
  file is opened before detaching: if it cannot be, the daemon says so on stderr and exits 1
  instead of running on with its logs going nowhere.

Errors the operator must fix are `StartError`; `main()` prints them as one line
(`<program>: error: <message>`, exit status 1) with `fail()`.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import logging.config
import logging.handlers
import os
import sys
from collections.abc import Iterator
from dataclasses import dataclass

DEFAULT_CONFIG = "/etc/nodepool/nodepool.yaml"
LOG_DIR = "/var/log/nodepool"
LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"

# Client libraries the daemons use (not driver names): chatty at DEBUG and INFO.
LIBRARY_LOGGERS = ("kazoo", "openstack", "keystoneauth", "urllib3", "paramiko", "stevedore",
                   "boto3", "botocore", "apscheduler")


class StartError(Exception):
    """Why a program cannot start, in one line for the operator."""


@dataclass(frozen=True)
class LogLevels:
    """A program's default levels (no `-l`): the root's, and the level of some library
    loggers without and with `-d`/`--debug` (None: left alone). `--debug` sets the root to
    DEBUG."""

    root: int = logging.INFO
    libraries: tuple[str, ...] = ()
    library_level: int = logging.WARNING
    library_debug_level: int | None = logging.WARNING


def fail(prog: str, message: object) -> int:
    """Print `<prog>: error: <message>` on stderr; the exit status for it."""
    print(f"{prog}: error: {message}", file=sys.stderr)
    return 1


# -- options ------------------------------------------------------------------------------------


def add_config_options(parser: argparse.ArgumentParser) -> None:
    """`-c CONFIG` and `-s SECURE`."""
    parser.add_argument("-c", dest="config", default=DEFAULT_CONFIG,
                        help=f"path to nodepool.yaml (default {DEFAULT_CONFIG})")
    parser.add_argument("-s", dest="secure", default=None, help="path to the secure file")


def add_logging_options(parser: argparse.ArgumentParser, debug_flag: str = "-d") -> None:
    """`-l LOGCONFIG` and the debug flag (`-d` for the daemons, `--debug` for the CLI)."""
    parser.add_argument("-l", dest="logconfig", default=None,
                        help="Python logging config file (ini, or .yaml/.yml for dictConfig)")
    parser.add_argument(debug_flag, dest="debug", action="store_true", help="debug logging")


def add_daemon_options(parser: argparse.ArgumentParser) -> None:
    """What `nodepool-launcher` and `nodepool-builder` share: config, logging, `-f`, `-p`."""
    add_config_options(parser)
    add_logging_options(parser)
    parser.add_argument("-f", dest="foreground", action="store_true",
                        help=f"run in the foreground, logging to stderr (else detach and log "
                        f"to {LOG_DIR}/<program>.log unless -l is given)")
    parser.add_argument("-p", dest="pidfile", default=None,
                        help="write the daemon's pid to this file")


# -- logging ------------------------------------------------------------------------------------


def setup_logging(args: argparse.Namespace, levels: LogLevels) -> None:
    """Apply `args.logconfig`, or log to stderr at `levels`. Raises StartError."""
    logconfig = getattr(args, "logconfig", None)
    if logconfig:
        try:
            _apply_logconfig(logconfig)
        except Exception as e:  # yaml, configparser and logging raise many kinds
            raise StartError(f"log config {logconfig}: {e}") from None
        return
    logging.basicConfig(level=logging.DEBUG if args.debug else levels.root, format=LOG_FORMAT)
    level = levels.library_debug_level if args.debug else levels.library_level
    if level is not None:
        for name in levels.libraries:
            logging.getLogger(name).setLevel(level)


def _apply_logconfig(path: str) -> None:
    if path.endswith((".yaml", ".yml")):
        import yaml

        with open(path) as f:
            logging.config.dictConfig(yaml.safe_load(f))
    else:
        logging.config.fileConfig(path, disable_existing_loggers=False)


def log_file_path(prog: str) -> str:
    return os.path.join(LOG_DIR, f"{prog}.log")


def _open_log_file(prog: str) -> logging.Handler:
    path = log_file_path(prog)
    try:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        handler = logging.handlers.WatchedFileHandler(path)
    except OSError as e:
        raise StartError(f"cannot write the log file {path}: {e.strerror or e} (run in the "
                         "foreground with -f, or give a logging config with -l)") from None
    handler.setFormatter(logging.Formatter(LOG_FORMAT))
    return handler


def _log_to(handler: logging.Handler) -> None:
    """Replace the root's stderr handlers (stderr is about to become /dev/null)."""
    root = logging.getLogger()
    for old in list(root.handlers):
        if isinstance(old, logging.StreamHandler) and old.stream in (sys.stderr, sys.stdout):
            root.removeHandler(old)
    root.addHandler(handler)


# -- detaching and the pidfile ------------------------------------------------------------------


def detach(prog: str, args: argparse.Namespace, workdir: str | None = "/") -> None:
    """Unless `-f`: double fork into a new session with stdin/out/err on /dev/null, then go
    on in the grandchild (the caller's process exits 0). Without `-l`, the logs go to
    `log_file_path(prog)` from then on. `workdir` None keeps the working directory (the
    builder: relative images-dir and elements-dir are relative to it). Raises StartError,
    before forking, when the log file cannot be opened."""
    if args.foreground:
        return
    handler = None if args.logconfig else _open_log_file(prog)
    if getattr(args, "pidfile", None):
        args.pidfile = os.path.abspath(args.pidfile)  # before leaving the working directory
    if os.fork() > 0:
        os._exit(0)
    os.setsid()
    if os.fork() > 0:
        os._exit(0)
    if workdir is not None:
        os.chdir(workdir)
    devnull = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1, 2):
        os.dup2(devnull, fd)
    if handler is not None:
        _log_to(handler)


@contextlib.contextmanager
def pidfile(path: str | None) -> Iterator[None]:
    """Write this process's pid to `path` (if given) for the block; remove it after."""
    if not path:
        yield
        return
    with open(path, "w") as f:
        f.write(f"{os.getpid()}\n")
    try:
        yield
    finally:
        with contextlib.suppress(OSError):
            os.unlink(path)
