"""ZooKeeper reads and admin writes behind the `nodepool` CLI and the status web app.

Reads go straight to ZooKeeper (no caches: the CLI is short-lived and the web app caches its
answers for a second). Records are decoded by `nodepool_ng.model`; every path comes from
`nodepool_ng.zk.paths`. Writes that race with daemons take the same kazoo locks they do.
"""

from __future__ import annotations

import contextlib
import logging
import socket
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any

from nodepool_ng import status
from nodepool_ng.errors import NodepoolError, RecordNotFound, ZooKeeperError
from nodepool_ng.model.image import BuildState, ImageBuild, ImageUpload, UploadState
from nodepool_ng.model.node import Node
from nodepool_ng.status import BuildView, ImageStatusView, NodeView, Table, UploadView
from nodepool_ng.zk import paths
from nodepool_ng.zk.client import ZooKeeperClient
from nodepool_ng.zk.components import ComponentRegistry
from nodepool_ng.zk.images import ImageStore
from nodepool_ng.zk.nodes import NodeStore
from nodepool_ng.zk.requests import RequestStore

log = logging.getLogger("nodepool_ng.statusdata")

# Upstream's CLI waits this long for a node lock (`delete`, `hold`).
NODE_LOCK_TIMEOUT = 5.0


class AdminError(NodepoolError):
    """A refused admin action (unknown id, wrong state); the message is for the user."""


def connect(config: Any, timeout: float | None = None) -> ZooKeeperClient:
    """A started client for the config's ZooKeeper servers (TLS when configured).

    Connecting and each call wait at most `zookeeper-timeout` (default 10 s) unless given.
    """
    tls = getattr(config, "zookeeper_tls", None)
    session_timeout = float(getattr(config, "zookeeper_timeout", 10.0) or 10.0)
    timeout = session_timeout if timeout is None else timeout
    client = ZooKeeperClient(
        config.zookeeper_hosts(),
        tls_cert=getattr(tls, "cert", None),
        tls_key=getattr(tls, "key", None),
        tls_ca=getattr(tls, "ca", None),
        session_timeout=session_timeout,
        operation_timeout=timeout,
    )
    client.start(timeout=timeout)
    return client


def provider_adapter(config: Any, provider_name: str, clouds_yaml: str | None = None) -> Any:
    """The driver adapter for one configured provider (for `delete --now`, alien lists).

    openstacksdk finds clouds.yaml as usual (OS_CLIENT_CONFIG_FILE, ~/.config/openstack,
    /etc/openstack) unless `clouds_yaml` names one.
    """
    from nodepool_ng.drivers import registry

    provider = config.providers[provider_name]
    options = registry.AdapterOptions(clouds_yaml=clouds_yaml, poll_interval=0.5)
    try:
        return registry.get(provider.driver).make_adapter(provider, options)
    except NodepoolError as e:
        raise AdminError(
            f"provider {provider_name}: {e} (point at the right clouds.yaml with "
            "--clouds-yaml or OS_CLIENT_CONFIG_FILE)"
        ) from None


class NodeData:
    """Nodes, node requests and the labels pools serve: rows and the node admin actions."""

    def __init__(self, zk: ZooKeeperClient) -> None:
        self.store = NodeStore(zk)
        self.request_store = RequestStore(zk)
        self.components = ComponentRegistry(zk)

    def nodes(self) -> list[Node]:
        """Every node, read directly (no cache), with its lock contenders."""
        out = []
        for node in self.store.read_all():
            node.lock_contenders = frozenset(self.store.lock_contenders(str(node.id)))
            out.append(node)
        return out

    def get_node(self, node_id: str) -> Node | None:
        try:
            node = self.store.get(node_id)
        except RecordNotFound:
            return None
        node.lock_contenders = frozenset(self.store.lock_contenders(node_id))
        return node

    def node_views(self, node_id: str | None = None) -> list[NodeView]:
        nodes = self.nodes() if node_id is None else [n for n in [self.get_node(node_id)] if n]
        return [NodeView(str(n.id), n.to_dict(), bool(n.lock_contenders)) for n in nodes]

    @contextlib.contextmanager
    def locked_node(self, node_id: str, timeout: float | None = None) -> Iterator[Node]:
        """Lock node `node_id` (as daemons and Zuul do), re-read it, yield it, unlock."""
        timeout = NODE_LOCK_TIMEOUT if timeout is None else timeout
        node = self.get_node(node_id)
        if node is None:
            raise AdminError(f"node {node_id} not found")
        self.store.lock(
            node, blocking=True, timeout=timeout, identifier=f"nodepool-cli@{_host()}"
        )
        try:
            try:
                self.store.refresh(node)
            except RecordNotFound:
                raise AdminError(f"node {node_id} was deleted meanwhile") from None
            yield node
        finally:
            self.store.unlock(node)

    def store_node(self, node: Node) -> None:
        self.store.store(node)

    def delete_node_record(self, node: Node) -> None:
        """Upstream's order: write `deleted` first, then remove the znode and its lock."""
        self.store.delete(node)

    def request_table(self) -> Table:
        return status.request_list((str(r.id), r.to_dict()) for r in self.request_store.read_all())

    def label_table(self) -> Table:
        return status.label_list(c.to_dict() for c in self.components.pools())


class ImageData:
    """Diskimage builds, provider uploads and pause flags: rows, admin actions, export and
    import."""

    def __init__(self, zk: ZooKeeperClient) -> None:
        self.zk = zk
        self.store = ImageStore(zk)

    def image_names(self) -> list[str]:
        return self.store.flags.image_names()

    def builds(self, image: str | None = None) -> list[ImageBuild]:
        out = []
        for name in [image] if image else self.image_names():
            out.extend(self.store.builds.builds(name))
        return out

    def uploads(self, provider: str | None = None) -> list[ImageUpload]:
        out = []
        for build in self.builds():
            image, build_id = str(build.image_name), str(build.id)
            for prov in self.store.uploads.providers(image, build_id):
                if provider is None or prov == provider:
                    out.extend(self.store.uploads.uploads(image, build_id, prov))
        return out

    def build_views(self) -> list[BuildView]:
        return [BuildView(str(b.image_name), str(b.id), b.to_dict()) for b in self.builds()]

    def upload_views(self) -> list[UploadView]:
        return [
            UploadView(
                str(u.image_name), str(u.build_id), str(u.provider_name), str(u.id), u.to_dict()
            )
            for u in self.uploads()
        ]

    def ready_upload_ids(self) -> set[tuple[str, str]]:
        """(provider, external id) of every READY upload."""
        return {
            (str(u.provider_name), str(u.external_id))
            for u in self.uploads()
            if u.state == UploadState.READY and u.external_id
        }

    def paused_images(self) -> list[str]:
        return [i for i in self.image_names() if self.store.flags.is_paused(i)]

    def image_status_views(self, configured: Iterable[str] = ()) -> list[ImageStatusView]:
        views = []
        for name in set(self.image_names()) | set(configured):
            building = any(b.state == BuildState.BUILDING for b in self.builds(name))
            views.append(
                ImageStatusView(
                    image=name,
                    paused=self.store.flags.is_paused(name),
                    request_ctime=self.store.flags.build_requested_at(name),
                    building=building,
                )
            )
        return views

    def set_image_paused(self, image: str, paused: bool) -> None:
        self.store.flags.set_paused(image, paused)

    def request_build(self, image: str) -> None:
        self.store.flags.request_build(image)

    def mark_build_deleting(self, image: str, build_id: str) -> None:
        """Upstream's `dib-image-delete`: refuse while building; the builder deletes it."""
        what = f"build {image}-{build_id}"
        builds = self.store.builds
        try:
            build = builds.get_build(image, build_id)
        except RecordNotFound:
            raise AdminError(f"{what} not found") from None
        if build.state == BuildState.BUILDING:
            raise AdminError(f"{what} is still building; cannot delete it")
        lock = builds.lock_build(image, build_id, blocking=True, timeout=NODE_LOCK_TIMEOUT)
        try:
            build = builds.get_build(image, build_id)
            build.state = BuildState.DELETING
            builds.store_build(build)
        finally:
            builds.unlock(lock)

    def mark_upload_deleting(
        self, image: str, build_id: str, provider: str, upload_id: str
    ) -> None:
        """Upstream's `image-delete`: refuse while uploading; the builder deletes it."""
        what = f"upload {upload_id} of {image} build {build_id} to {provider}"
        try:
            upload = self.store.uploads.get_upload(image, build_id, provider, upload_id)
        except RecordNotFound:
            raise AdminError(f"{what} not found") from None
        if upload.state == UploadState.UPLOADING:
            raise AdminError(f"{what} is still uploading; cannot delete it")
        upload.state = UploadState.DELETING
        self.store.uploads.store_upload(upload)

    def provider_uploads(self, provider: str) -> list[tuple[str, str, list[str]]]:
        """(image, build id, upload ids) of every build with uploads to `provider`."""
        grouped: dict[tuple[str, str], list[str]] = {}
        for u in self.uploads(provider):
            grouped.setdefault((str(u.image_name), str(u.build_id)), []).append(str(u.id))
        return [(i, b, sorted(ids)) for (i, b), ids in sorted(grouped.items())]

    # -- export / import ---------------------------------------------------------------------
    def export_image_data(self) -> dict[str, str]:
        """{znode path: JSON text} of every build, upload and pause flag (upstream's format)."""
        data: dict[str, str] = {}
        for image in self.paused_images():
            data[paths.image_pause_path(image)] = ""
        for build in self.builds():
            path = paths.build_path(str(build.image_name), str(build.id))
            data[path] = build.to_json().decode("utf-8")
        for u in self.uploads():
            data[u.path] = u.to_json().decode("utf-8")
        return data

    def import_image_data(self, data: Mapping[str, str]) -> int:
        """Create every record of an export; refuses if any already exists."""
        for path in data:
            if not path.startswith(paths.IMAGES_ROOT + "/"):
                raise AdminError(f"{path}: not an image record path")
            if self.zk.exists(path):
                raise AdminError(f"{path} already exists; not importing anything")
        max_upload: dict[str, int] = {}
        for path in sorted(data):
            self.zk.create(path, data[path].encode("utf-8"), makepath=True)
            parsed = paths.parse_upload_path(path)
            if parsed and parsed[3].isdigit():
                parent = path.rsplit("/", 1)[0]
                max_upload[parent] = max(max_upload.get(parent, -1), int(parsed[3]))
        # Upload ids are sequence numbers: move each counter past the imported ids so the
        # builder's next upload cannot collide with one of them.
        for parent, highest in max_upload.items():
            while True:
                made = self.zk.create(f"{parent}/", b"", sequence=True)
                self.zk.delete(made)
                if int(made.rsplit("/", 1)[1]) >= highest:
                    break
        return len(data)


class ZooKeeperData:
    """What the `nodepool` CLI and the web app read and change over one `ZooKeeperClient`:
    `nodes` (nodes, requests, labels) and `images` (builds, uploads)."""

    def __init__(
        self, zk: ZooKeeperClient, config_getter: Callable[[], Any] | None = None
    ) -> None:
        self.zk = zk
        self.config_getter = config_getter
        self.nodes = NodeData(zk)
        self.images = ImageData(zk)

    def image_status_table(self) -> Table:
        """`image-status` of every image in ZooKeeper or in the config."""
        config = self.config_getter() if self.config_getter else None
        configured = list(getattr(config, "diskimages", {}) or {}) if config is not None else []
        return status.image_status(self.images.image_status_views(configured))

    def erase_provider(self, provider: str) -> tuple[int, int]:
        """Remove `provider`'s upload and node records (ZooKeeper only, not the cloud)."""
        uploads = 0
        for image, build_id, upload_ids in self.images.provider_uploads(provider):
            base = f"{paths.build_providers_path(image, build_id)}/{provider}"
            uploads += len(upload_ids)
            self.zk.delete(base, recursive=True)
        nodes = 0
        for node in self.nodes.nodes():
            if node.provider == provider:
                self.zk.delete(paths.node_path(str(node.id)), recursive=True)
                nodes += 1
        return uploads, nodes


class ZooKeeperStatusSource:
    """The web app's view: one `Table` per endpoint, read fresh from ZooKeeper."""

    def __init__(self, zk: ZooKeeperClient, config_getter: Callable[[], Any] | None = None) -> None:
        self.data = ZooKeeperData(zk, config_getter)

    def table(self, name: str, node_id: str | None = None) -> Table:
        nodes, images = self.data.nodes, self.data.images
        if name == "node-list":
            return status.node_list(nodes.node_views(node_id), detail=True)
        if name == "request-list":
            return nodes.request_table()
        if name == "label-list":
            return nodes.label_table()
        if name == "image-list":
            return status.image_list(images.upload_views())
        if name == "dib-image-list":
            return status.dib_image_list(images.build_views(), images.paused_images())
        if name == "image-status":
            return self.data.image_status_table()
        raise ZooKeeperError(f"unknown status table {name!r}")

    def request_records(self) -> list[tuple[str, dict[str, Any]]]:
        """(request id, upstream JSON) of every node request (the status page: ages)."""
        return [(str(r.id), r.to_dict()) for r in self.data.nodes.request_store.read_all()]

    def pool_records(self) -> list[dict[str, Any]]:
        """Upstream JSON of every registered pool component (provider, labels, paused)."""
        return [c.to_dict() for c in self.data.nodes.components.pools()]


def _host() -> str:
    return socket.gethostname()
