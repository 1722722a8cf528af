"""`nodepool-launcher -c FILE [-s SECURE] [-f] [-p PIDFILE] [-l LOGCONFIG] [--no-webapp]
[--provider NAME ...]`.

`-f` runs in the foreground, logging to stderr; otherwise the process detaches (double fork,
pidfile) and logs to /var/log/nodepool/nodepool-launcher.log unless `-l` names a logging
config (`nodepool_ng.runtime.daemon`).
SIGTERM/SIGINT stop cleanly; SIGHUP re-reads the config now (`systemctl reload`); SIGUSR2
dumps every thread's stack to the log. openstacksdk finds clouds.yaml as usual (e.g. env
OS_CLIENT_CONFIG_FILE), or pass `--clouds-yaml`.

Under systemd (`Type=notify`) it sends READY=1 once its pools are registered in ZooKeeper,
and WATCHDOG=1 while its loops make progress (`nodepool_ng.runtime.watchdog`).
"""

from __future__ import annotations

import argparse
import faulthandler
import logging
import sys
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING

from nodepool_ng.cmd import add_version_option
from nodepool_ng.cmd.startup import clouds_yaml_problem, config_problem
from nodepool_ng.errors import NodepoolError
from nodepool_ng.runtime import daemon, sdnotify
from nodepool_ng.runtime.signals import install_signal_handlers
from nodepool_ng.runtime.watchdog import Watchdog

if TYPE_CHECKING:
    from _typeshed.wsgi import WSGIApplication

    from nodepool_ng.launcher.service import Launcher
    from nodepool_ng.web.server import WebApp

PROG = "nodepool-launcher"
log = logging.getLogger("nodepool_ng.cmd.launcher")
LOG_LEVELS = daemon.LogLevels(logging.INFO, daemon.LIBRARY_LOGGERS, logging.WARNING,
                              logging.WARNING)


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog=PROG, description=__doc__.split("\n")[0])
    daemon.add_daemon_options(parser)
    parser.add_argument("--no-webapp", action="store_true", help="do not start the webapp")
    add_version_option(parser)
    parser.add_argument("--clouds-yaml", default=None, help="explicit clouds.yaml path")
    parser.add_argument(
        "--provider", dest="providers", action="append", metavar="NAME",
        help="run only this provider of the config (repeatable); other launcher processes "
        "run the others. Default: all providers",
    )
    # Seconds between config file checks (SIGHUP checks at once); tests lengthen it.
    parser.add_argument("--config-interval", type=float, default=5.0, help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    from nodepool_ng.launcher.service import Launcher, LauncherOptions

    try:
        daemon.setup_logging(args, LOG_LEVELS)
        options = LauncherOptions(
            clouds_yaml=args.clouds_yaml,
            providers=frozenset(args.providers) if args.providers else None,
            config_interval=args.config_interval,
        )
        launcher = Launcher(args.config, args.secure, options)
        problem = config_problem(launcher.config, args.config) or clouds_yaml_problem(
            args.clouds_yaml)
        if problem is not None:
            raise daemon.StartError(problem)
        daemon.detach(PROG, args)
    except (daemon.StartError, NodepoolError, OSError) as e:
        return daemon.fail(PROG, e)
    with daemon.pidfile(args.pidfile):
        return _run(launcher, args)


def _run(launcher: Launcher, args: argparse.Namespace) -> int:
    def stop() -> None:
        sdnotify.notify("STOPPING=1")
        launcher.stop()

    # A watchdog kill (SIGABRT) or a crash in C code writes every thread's stack to stderr
    # (the journal under systemd).
    faulthandler.enable(all_threads=True)
    install_signal_handlers(stop, reload=lambda: _check_config_now(launcher))
    # Every ZooKeeper reply is handed from kazoo's reader thread to a waiting worker; with
    # the default 5 ms switch interval, busy API threads make each hand-over (and so each
    # round trip) wait several ms for the GIL. 1 ms keeps round trips short.
    sys.setswitchinterval(0.001)
    watchdog = Watchdog.from_environment()
    # Before start(): /health/live answers at once; /ready and /health/ready say 503 until
    # the pools are registered (and while a loop is stuck or dead: `_ready`).
    webapp = None if args.no_webapp else _start_webapp(launcher, lambda: _ready(launcher,
                                                                                watchdog))
    try:
        try:
            launcher.start()
        except NodepoolError as e:
            log.error("Could not start: %s", e)
            return daemon.fail(PROG, e)
        not_started = providers_not_started(launcher)
        if not_started:
            # Running on with nothing to launch would look healthy while serving nothing.
            message = (f"no provider could start: {', '.join(not_started)} "
                       "(the log says why for each)")
            log.error("%s; stopping", message)
            launcher.stop()
            return daemon.fail(PROG, message)
        # start() returned with every pool of our providers registered: requests are served.
        sdnotify.notify(
            "READY=1", f"STATUS=serving providers {', '.join(sorted(launcher.providers))}"
        )
        watchdog.run(launcher.wait)
    finally:
        if webapp is not None:
            try:
                webapp.stop()
            except Exception:
                log.exception("webapp stop failed")
    return 0


def _ready(launcher: Launcher, watchdog: Watchdog) -> bool:
    """Pools registered, and no loop stuck or dead (the watchdog's verdict)."""
    return launcher.ready.is_set() and not launcher.wait(0) and not watchdog.problems()


def providers_not_started(launcher: Launcher) -> list[str]:
    """This process's providers (its --provider selection of the config) when none of them
    started; [] when one did, or when there are none to start."""
    wanted = launcher.options.providers
    mine = sorted(name for name in launcher.config.providers
                  if wanted is None or name in wanted)
    return mine if mine and not launcher.providers else []


def _check_config_now(launcher: Launcher) -> None:
    """SIGHUP: wake the config worker. Before start() there is none yet, and its first pass
    checks the files anyway."""
    worker = getattr(launcher, "config_worker", None)
    if worker is not None:
        worker.wake()


def web_mounts(launcher: Launcher) -> Mapping[str, WSGIApplication]:
    """WSGI applications the web app serves under a path prefix, before its own routes
    (prefix -> application, e.g. `{"/api/v1": api}`); the one place they are built."""
    from nodepool_ng.api.app import ApiApp

    return {"/api/v1": ApiApp(lambda: launcher.api, lambda: launcher.config)}


def _start_webapp(launcher: Launcher, ready: Callable[[], bool]) -> WebApp | None:
    """The status web app (webapp.port from the config); failures only logged."""
    from nodepool_ng.web.server import WebApp

    try:
        cfg = launcher.config.webapp
        app = WebApp(
            lambda: launcher.zk_client, lambda: launcher.config, host=cfg.listen_address,
            port=cfg.port, ready_check=ready, launcher_status=launcher.provider_status,
            mounts=web_mounts(launcher),
        )
        app.start()
        return app
    except Exception as e:
        log.warning("webapp did not start: %s", e)
        return None


if __name__ == "__main__":
    sys.exit(main())
