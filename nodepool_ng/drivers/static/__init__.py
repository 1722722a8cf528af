"""The static driver: hosts that already exist. Nothing is booted or deleted.

The launcher registers each configured host as READY nodes (one per `max-parallel-jobs`
slot, `drivers/static/registrar.py`) and hands them out like any ready node; a used node's record is
deleted and the host registered afresh. This module is the cloud side of that: an adapter
whose launches never happen and whose deletes are immediate, plus the two host checks
upstream makes: at registration (reachable, host keys) and before a node is handed out
(still reachable).
"""

from __future__ import annotations

import logging
import socket
from collections.abc import Callable, Iterable

from nodepool_ng.config.models import StaticNodeConfig
from nodepool_ng.drivers.base import Instance, LaunchSpec, Resource
from nodepool_ng.errors import LaunchError, NodeScanError
from nodepool_ng.model.quota import Quota
from nodepool_ng.nodescan import SSH_CONNECTION_TYPES, scan_host_keys, wait_for_port

log = logging.getLogger("nodepool_ng.drivers.static")

# Upstream's `launcher` value on static nodes (Zuul and `nodepool list` show it).
STATIC_LAUNCHER = "static driver"


class StaticHostError(Exception):
    """A configured host cannot be registered (unreachable, or its host key changed)."""


class _Done:
    """A delete of a static node: there is no server, so it is complete at once."""

    complete = True
    external_id: str | None = None

    def advance(self) -> Instance | None:
        return None


class _NoLaunch:
    """Static pools never launch (the pool worker never asks); fail loudly if one does."""

    complete = False
    external_id: str | None = None

    def advance(self) -> Instance | None:
        raise LaunchError("the static driver does not launch servers")


class StaticAdapter:
    """`ProviderAdapter` of a static provider: no servers, no resources, no cloud quota."""

    def get_create_state_machine(
        self, spec: LaunchSpec, log: logging.LoggerAdapter[logging.Logger] | logging.Logger
    ) -> _NoLaunch:
        return _NoLaunch()

    def get_delete_state_machine(
        self, external_id: str, log: logging.LoggerAdapter[logging.Logger] | logging.Logger
    ) -> _Done:
        return _Done()

    def list_instances(self) -> Iterable[Instance]:
        return []  # nothing can leak

    def get_quota_limits(self) -> Quota:
        return Quota()  # unlimited: a static pool is limited by its hosts' slots

    def get_quota_for_label(self, spec: LaunchSpec) -> Quota:
        return Quota.of(instances=1)

    def list_resources(self) -> Iterable[Resource]:
        return []

    def leak_candidates(self) -> Iterable[Resource]:
        return []

    def delete_resource(self, resource: Resource) -> None:
        raise NotImplementedError("static providers own no cloud resources")

    def get_console_log(self, external_id: str) -> str:
        return ""

    def set_progress_listener(self, listener: Callable[[], None] | None) -> None:
        pass

    def stop(self) -> None:
        pass


def gathers_host_keys(host: StaticNodeConfig) -> bool:
    return host.connection_type in SSH_CONNECTION_TYPES


def registration_keys(host: StaticNodeConfig) -> list[str]:
    """The host keys to record for a host being registered; raises StaticHostError.

    As upstream: with host-key-checking off, the configured `host-key`s are recorded without
    connecting; otherwise the host must answer within `timeout`, and every configured key
    must be among those it offers (a changed key is refused, not trusted)."""
    if gathers_host_keys(host) and not host.host_key_checking:
        return list(host.host_key)
    try:
        keys = scan_host_keys(host.name, host.connection_port, float(host.timeout),
                              host.connection_type)
    except (NodeScanError, OSError) as e:
        raise StaticHostError(f"{describe(host)}: not reachable: {e}") from e
    if not gathers_host_keys(host):
        return []
    missing = [key for key in host.host_key if key not in keys]
    if missing:
        raise StaticHostError(f"{describe(host)}: host key mismatch: configured {missing} "
                              f"not among the offered {keys}")
    return keys


def is_alive(host: StaticNodeConfig) -> bool:
    """Upstream's check before handing a node out: with host-key-checking on, the port must
    accept a TCP connection within `timeout`; with it off the host is assumed alive."""
    if not host.host_key_checking:
        return True
    try:
        wait_for_port(host.name, host.connection_port, float(host.timeout))
    except (NodeScanError, OSError) as e:
        log.warning("Static host %s is not reachable: %s", describe(host), e)
        return False
    return True


def host_addresses(host: StaticNodeConfig) -> tuple[str | None, str | None]:
    """(public_ipv4, public_ipv6) of the host's name, as upstream's `set_node_ip`: the first
    address the resolver gives."""
    try:
        family, _, _, _, addr = socket.getaddrinfo(
            host.name, host.connection_port, 0, socket.SOCK_STREAM)[0]
    except OSError as e:
        raise StaticHostError(f"{describe(host)}: cannot resolve the name: {e}") from e
    if family == socket.AF_INET6:
        return None, str(addr[0])
    return str(addr[0]), None


def describe(host: StaticNodeConfig) -> str:
    return f"{host.username}@{host.name}:{host.connection_port}"
