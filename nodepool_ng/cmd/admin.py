"""`nodepool`: the admin CLI (upstream's commands and columns, plus `--json`).

Errors go to stderr as `nodepool: error: ...` with exit status 1, never a traceback
(`--debug` shows it). `config-validate` needs no ZooKeeper; every other command connects.
"""

from __future__ import annotations

import argparse
import logging
import sys
import traceback
from collections.abc import Callable, Sequence
from typing import Any

from nodepool_ng.cmd import add_version_option, admin_images, admin_nodes, admin_requests_api
from nodepool_ng.cmd.admin_context import AdminContext, CommandError
from nodepool_ng.runtime import daemon
from nodepool_ng.znode_names import znode_name_problem

PROG = "nodepool"
# The CLI's own output is its tables: warnings only, and kazoo's connection chatter hidden.
LOG_LEVELS = daemon.LogLevels(logging.WARNING, ("kazoo",), logging.ERROR, None)

log = logging.getLogger("nodepool_ng.cmd.admin")

Handler = Callable[[AdminContext, argparse.Namespace], int | None]

# Arguments (dest -> how the user wrote it) that become one znode's name in a path.
ZNODE_NAME_ARGS = {
    "id": "id",
    "image": "image",
    "provider": "provider",
    "build_id": "--build-id",
    "upload_id": "--upload-id",
}


def _add(
    sub: Any, name: str, func: Handler, help_text: str
) -> argparse.ArgumentParser:
    parser: argparse.ArgumentParser = sub.add_parser(name, help=help_text, description=help_text)
    parser.set_defaults(func=func, command=name)
    return parser


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=PROG, description="Nodepool admin commands.")
    daemon.add_config_options(parser)
    daemon.add_logging_options(parser, debug_flag="--debug")  # --debug also shows tracebacks
    parser.add_argument("--json", action="store_true", help="JSON output instead of tables")
    parser.add_argument(
        "--clouds-yaml", help="clouds.yaml for commands that talk to clouds (delete --now, ...)"
    )
    add_version_option(parser)
    sub = parser.add_subparsers(title="commands", metavar="COMMAND")

    p = _add(sub, "list", admin_nodes.cmd_list, "list nodes")
    p.add_argument("--detail", action="store_true", help="show more columns")
    _add(sub, "request-list", admin_nodes.cmd_request_list, "list node requests")
    admin_requests_api.add_commands(sub, _add)  # request-create, -show, -renew, -return
    _add(sub, "label-list", admin_nodes.cmd_label_list, "list labels served by running pools")
    p = _add(sub, "delete", admin_nodes.cmd_delete, "mark a node for deletion")
    p.add_argument("id", help="node id")
    p.add_argument("--now", action="store_true", help="delete the server in the foreground")
    p = _add(sub, "hold", admin_nodes.cmd_hold, "place a node in the hold state")
    p.add_argument("id", help="node id")
    p.add_argument("--reason", help="comment stored on the node")
    p = _add(sub, "info", admin_nodes.cmd_info, "ZooKeeper data for one provider")
    p.add_argument("provider", help="provider name")
    p = _add(sub, "erase", admin_nodes.cmd_erase, "remove a provider's data from ZooKeeper")
    p.add_argument("provider", help="provider name")
    p.add_argument("--force", action="store_true", help="do not ask for confirmation")
    _add(sub, "config-validate", admin_nodes.cmd_config_validate, "validate the config file")

    p = _add(sub, "image-build", admin_images.cmd_image_build, "request an image build")
    p.add_argument("image", help="diskimage name")
    p.add_argument("--wait", action="store_true", help="show progress until built and uploaded")
    p.add_argument("--timeout", type=float, default=None, help="give up --wait after seconds")
    _add(sub, "dib-image-list", admin_images.cmd_dib_image_list, "list diskimage builds")
    _add(sub, "image-list", admin_images.cmd_image_list, "list image uploads")
    _add(sub, "image-status", admin_images.cmd_image_status, "pause flags and build requests")
    p = _add(sub, "image-delete", admin_images.cmd_image_delete, "delete an image upload")
    for opt, what in (
        ("--provider", "provider name"),
        ("--image", "image name"),
        ("--build-id", "image build id"),
        ("--upload-id", "image upload id"),
    ):
        p.add_argument(opt, required=True, help=what)
    p = _add(sub, "dib-image-delete", admin_images.cmd_dib_image_delete, "delete a build")
    p.add_argument("id", help="build id as shown by dib-image-list (<image>-<build id>)")
    p = _add(sub, "image-pause", admin_images.cmd_image_pause, "pause builds of an image")
    p.add_argument("image", help="image name")
    p = _add(sub, "image-unpause", admin_images.cmd_image_unpause, "resume builds of an image")
    p.add_argument("image", help="image name")
    p = _add(sub, "alien-image-list", admin_images.cmd_alien_image_list, "unmanaged images")
    p.add_argument("provider", nargs="?", help="provider name")
    p = _add(sub, "export-image-data", admin_images.cmd_export, "export image records")
    p.add_argument("path", help="file to write")
    p = _add(sub, "import-image-data", admin_images.cmd_import, "import image records")
    p.add_argument("path", help="file to read")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_usage(sys.stderr)
        return daemon.fail(PROG, "a command is required")
    try:
        daemon.setup_logging(args, LOG_LEVELS)
    except daemon.StartError as e:
        return daemon.fail(PROG, e)
    ctx = AdminContext(args.config, args.secure, as_json=args.json, clouds_yaml=args.clouds_yaml)
    try:
        _check_znode_names(args)
        rc = args.func(ctx, args)
        return 0 if rc is None else rc
    except KeyboardInterrupt:
        print("nodepool: interrupted", file=sys.stderr)
        return 130
    except CommandError as e:
        _fail(args, str(e))
    except Exception as e:  # the top of the CLI: a message, never a traceback
        _fail(args, f"{type(e).__name__}: {e}" if not str(e) else str(e))
    finally:
        ctx.close()
    return 1


def _check_znode_names(args: argparse.Namespace) -> None:
    """`../x` or `a/b` would name another place in the tree: refuse before any ZooKeeper call."""
    for dest, argument in ZNODE_NAME_ARGS.items():
        value = getattr(args, dest, None)
        if isinstance(value, str) and (problem := znode_name_problem(value)) is not None:
            raise CommandError(f"{argument}: {problem}")


def _fail(args: argparse.Namespace, message: str) -> None:
    if args.debug:
        traceback.print_exc()
    daemon.fail(PROG, message)


if __name__ == "__main__":
    sys.exit(main())
