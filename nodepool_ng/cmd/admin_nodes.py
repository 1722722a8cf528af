"""`nodepool` commands about nodes, requests, labels, providers and the config file."""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time

from nodepool_ng import status
from nodepool_ng.cmd.admin_context import AdminContext, CommandError
from nodepool_ng.model.node import Node, NodeState
from nodepool_ng.status import NodeView, Table

log = logging.getLogger("nodepool_ng.cmd.admin")

# How long `delete --now` waits for the cloud to delete the server.
DELETE_NOW_TIMEOUT = 300.0


def cmd_list(ctx: AdminContext, args: argparse.Namespace) -> None:
    ctx.show(status.node_list(ctx.data.nodes.node_views(), detail=args.detail))


def cmd_request_list(ctx: AdminContext, args: argparse.Namespace) -> None:
    ctx.show(ctx.data.nodes.request_table())


def cmd_label_list(ctx: AdminContext, args: argparse.Namespace) -> None:
    ctx.show(ctx.data.nodes.label_table())


def _show_node(ctx: AdminContext, view: NodeView) -> None:
    """Show the node as it is now (our lock released), or as we left it if already gone."""
    views = ctx.data.nodes.node_views(view.id) or [NodeView(view.id, view.data, locked=False)]
    ctx.show(status.node_list(views, detail=False))


def cmd_hold(ctx: AdminContext, args: argparse.Namespace) -> None:
    with ctx.data.nodes.locked_node(args.id) as node:
        node.state = NodeState.HOLD
        if args.reason:
            node.comment = args.reason
        ctx.data.nodes.store_node(node)
        view = NodeView(args.id, node.to_dict(), locked=True)
    _show_node(ctx, view)


def cmd_delete(ctx: AdminContext, args: argparse.Namespace) -> None:
    with ctx.data.nodes.locked_node(args.id) as node:
        if args.now:
            _delete_now(ctx, node)
            node.state = NodeState.DELETED
            view = NodeView(args.id, node.to_dict(), locked=True)
            ctx.data.nodes.delete_node_record(node)
        else:
            node.state = NodeState.DELETING
            ctx.data.nodes.store_node(node)
            view = NodeView(args.id, node.to_dict(), locked=True)
    _show_node(ctx, view)


def _delete_now(ctx: AdminContext, node: Node) -> None:
    """Delete the node's server through its provider's driver, waiting for the cloud."""
    provider_name = str(node.provider)
    external_id = node.external_id
    if not external_id:
        return  # nothing was created in the cloud
    if provider_name not in ctx.config.providers:
        raise CommandError(
            f"node {node.id}: provider {provider_name!r} is not in "
            f"{ctx.config_path}; cannot delete its server"
        )
    from nodepool_ng.statusdata import provider_adapter

    adapter = provider_adapter(ctx.config, provider_name, ctx.clouds_yaml)
    try:
        machine = adapter.get_delete_state_machine(external_id, log)
        deadline = time.monotonic() + DELETE_NOW_TIMEOUT
        while not machine.complete:
            machine.advance()
            if machine.complete:
                break
            if time.monotonic() > deadline:
                raise CommandError(
                    f"node {node.id}: server {external_id} not deleted "
                    f"within {DELETE_NOW_TIMEOUT:.0f}s"
                )
            time.sleep(0.2)
    finally:
        adapter.stop()


def cmd_info(ctx: AdminContext, args: argparse.Namespace) -> None:
    provider = args.provider
    images = Table(
        (("image", "Image Name"), ("build_id", "Build ID"), ("upload_ids", "Upload IDs"))
    )
    for image, build_id, upload_ids in ctx.data.images.provider_uploads(provider):
        images.rows.append({"image": image, "build_id": build_id, "upload_ids": upload_ids})
    nodes = Table((("id", "ID"), ("server_id", "Server ID")))
    for view in ctx.data.nodes.node_views():
        if view.data.get("provider") == provider:
            nodes.rows.append({"id": view.id, "server_id": view.data.get("external_id")})
    if ctx.as_json:
        ctx.print(json.dumps({"provider": provider, "images": images.rows, "nodes": nodes.rows}))
        return
    ctx.print(f"ZooKeeper image data for provider {provider}")
    ctx.show(images)
    ctx.print()
    ctx.print(f"ZooKeeper node data for provider {provider}")
    ctx.show(nodes)


def cmd_erase(ctx: AdminContext, args: argparse.Namespace) -> int | None:
    provider = args.provider
    if not args.force:
        answer = _ask(
            f"Are you sure you want to erase the ZooKeeper data of provider {provider!r}? [y/N] "
        )
        if answer.strip().lower() not in ("y", "yes"):
            print("nodepool: erase cancelled", file=sys.stderr)
            return 1
    uploads, nodes = ctx.data.erase_provider(provider)
    if ctx.as_json:
        ctx.print(json.dumps({"provider": provider, "uploads": uploads, "nodes": nodes}))
    else:
        ctx.print(f"Erased {uploads} image upload(s) and {nodes} node(s) of provider {provider}")
    return None


def _ask(prompt: str) -> str:
    try:
        return input(prompt)
    except EOFError:
        return ""


def cmd_config_validate(ctx: AdminContext, args: argparse.Namespace) -> int | None:
    """Runs without ZooKeeper; each problem (field path first) on stderr, exit 1. Also what
    every daemon needs of the config (zookeeper-servers), with the secure file merged."""
    from nodepool_ng.config import validate_file
    from nodepool_ng.config.checks import check_zookeeper_user

    problems = validate_file(ctx.config_path, ctx.secure_path)
    if not problems:
        problems = [f"{field}: {message}" for field, message in check_zookeeper_user(ctx.config)]
    for problem in problems:
        print(f"nodepool: error: {problem}", file=sys.stderr)
    if ctx.as_json:
        result = {"config": ctx.config_path, "valid": not problems, "errors": problems}
        ctx.print(json.dumps(result))
    elif not problems:
        ctx.print(f"{ctx.config_path}: configuration is valid")
    return 1 if problems else None
