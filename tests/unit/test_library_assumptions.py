"""Every internal of a client library nodepool_ng relies on, checked against the version
installed: each test fails naming the library, its version, the internal and our module that
needs it, so an upgrade that moves one is caught here rather than in production.

setup.cfg bounds these libraries below their next major version and constraints.txt pins the
versions tested (the last test checks each pin against setup.cfg's bounds). The internals
relied upon:

kazoo (nodepool_ng/zk/connection.py, zk/watch.py, zk/handler.py):
  - `KazooClient._connection`: the `ConnectionHandler` instance `install()` re-classes;
  - `KazooClient._stopped` (an Event), `.chroot`, `.unchroot(path)`, `.handler.async_result()`;
  - `KazooClient._call(request, async_object)`: sends our `AddWatch` through kazoo's queue;
  - `ConnectionHandler._read_watch_event(buffer, offset)`, `._write(msg, timeout)`,
    `._read(length, timeout)`, `._socket`, `._socket_error_handling()`, `.handler`, `.client`:
    overridden or used by `NodepoolConnectionHandler`, and called by kazoo's own loop;
  - `kazoo.protocol.paths._prefix_root(root, path)`;
  - `kazoo.protocol.serialization.Watch.deserialize(bytes, offset)` -> (type, state, path),
    `int_struct` (a big-endian int) and `write_string`;
  - `SequentialThreadingHandler.select(...)`: the connection loop's only wait, replaced by
    `PollingThreadingHandler` (`handler.timeout_exception` raised on a time-out).
openstacksdk (nodepool_ng/drivers/openstack/servers.py, sdk.py):
  - `Connection._encode_server_userdata(userdata)` (base64 of the text);
  - `Connection._needs_floating_ip(server, nat_destination)`, `._has_floating_ips()`,
    `._delete_server_floating_ips(server, delete_ip_retry)`;
  - `Connection.has_service(service_key, version=None)`, replaced per instance;
  - `openstack.cloud.meta.add_server_interfaces(cloud, server)`, which asks `has_service`;
  - `openstack.compute.v2.server.Server._get_microversion(session)`;
  - `openstack.utils.Munch` (a dict with attribute access).
keystoneauth1 and requests (nodepool_ng/drivers/openstack/sdk.py):
  - `keystoneauth1.session.Session.session` (the `requests.Session`) and `.verify`;
  - `requests.Session.trust_env`, consulted by `merge_environment_settings`.
botocore (nodepool_ng/drivers/aws/api.py):
  - the `before-call.ec2.<Operation>` event, whose handlers get the operation `model=`
    (its `.name` tells reads from writes for the rate limiter).
"""

from __future__ import annotations

import base64
import configparser
import importlib.metadata
import inspect
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name


def _fail(dist: str, internal: str, ours: str, problem: str) -> str:
    version = importlib.metadata.version(dist)
    return (f"{dist} {version}: {internal} {problem}; {ours} relies on it "
            f"(see tests/unit/test_library_assumptions.py)")


def params(fn: Callable[..., Any]) -> list[str]:
    return [name for name in inspect.signature(fn).parameters if name != "self"]


def assume_params(dist: str, owner: Any, name: str, expected: list[str], ours: str) -> None:
    internal = f"{getattr(owner, '__name__', owner)}.{name}"
    fn = getattr(owner, name, None)
    assert fn is not None, _fail(dist, internal, ours, "is gone")
    got = params(fn)
    assert got[:len(expected)] == expected, _fail(
        dist, internal, ours, f"changed signature: {got}, expected {expected} first")


# --- kazoo ---------------------------------------------------------------------------------

KAZOO_CONN = "nodepool_ng/zk/connection.py"


@pytest.fixture
def kazoo_client() -> Any:
    from kazoo.client import KazooClient

    return KazooClient(hosts="127.0.0.1:1")  # never started: no connection is made


def test_kazoo_client_internals(kazoo_client: Any) -> None:
    from kazoo.protocol.connection import ConnectionHandler

    connection = getattr(kazoo_client, "_connection", None)
    assert isinstance(connection, ConnectionHandler), _fail(
        "kazoo", "KazooClient._connection", KAZOO_CONN, "is no ConnectionHandler")
    assert connection.client is kazoo_client, _fail(
        "kazoo", "ConnectionHandler.client", KAZOO_CONN, "is not the client")
    assert connection.handler is kazoo_client.handler, _fail(
        "kazoo", "ConnectionHandler.handler", KAZOO_CONN, "is not the client's handler")
    assert hasattr(connection, "_socket"), _fail(
        "kazoo", "ConnectionHandler._socket", KAZOO_CONN, "is gone")
    stopped = getattr(kazoo_client, "_stopped", None)
    assert isinstance(stopped, threading.Event), _fail(
        "kazoo", "KazooClient._stopped", KAZOO_CONN, "is no threading.Event")
    assert kazoo_client.unchroot("/nodepool/nodes") == "/nodepool/nodes", _fail(
        "kazoo", "KazooClient.unchroot", KAZOO_CONN, "changed behaviour")
    assume_params("kazoo", type(kazoo_client), "_call", ["request", "async_object"],
                  "nodepool_ng/zk/watch.py")
    assert callable(getattr(kazoo_client.handler, "async_result", None)), _fail(
        "kazoo", "KazooClient.handler.async_result", "nodepool_ng/zk/watch.py", "is gone")


def test_kazoo_connection_handler_methods() -> None:
    from kazoo.protocol.connection import ConnectionHandler

    assume_params("kazoo", ConnectionHandler, "_read_watch_event", ["buffer", "offset"],
                  KAZOO_CONN)
    assume_params("kazoo", ConnectionHandler, "_write", ["msg", "timeout"], KAZOO_CONN)
    assume_params("kazoo", ConnectionHandler, "_read", ["length", "timeout"], KAZOO_CONN)
    assume_params("kazoo", ConnectionHandler, "_socket_error_handling", [], KAZOO_CONN)
    # Overriding them only works while kazoo's own loop calls them through `self`.
    source = inspect.getsource(ConnectionHandler)
    for call in ("self._read_watch_event(", "self._write(", "self._read(",
                 "self.handler.select("):
        assert call in source, _fail(
            "kazoo", f"ConnectionHandler's `{call}...)`", KAZOO_CONN + ", zk/handler.py",
            "is no longer called by the connection loop")


def test_kazoo_protocol_helpers() -> None:
    from kazoo.protocol import paths, serialization

    prefix_root = getattr(paths, "_prefix_root", None)
    assert prefix_root is not None, _fail(
        "kazoo", "kazoo.protocol.paths._prefix_root", "nodepool_ng/zk/watch.py", "is gone")
    assert prefix_root("/chroot", "/nodepool") == "/chroot/nodepool", _fail(
        "kazoo", "_prefix_root(root, path)", "nodepool_ng/zk/watch.py", "changed behaviour")
    watch_event = serialization.int_struct.pack(1) + serialization.int_struct.pack(3)
    watch_event += serialization.write_string("/a/b")
    watch, offset = serialization.Watch.deserialize(bytes(watch_event), 0)
    assert (watch.type, watch.state, watch.path, offset) == (1, 3, "/a/b", len(watch_event)), \
        _fail("kazoo", "Watch.deserialize / int_struct / write_string", KAZOO_CONN,
              f"changed shape: {watch!r}, {offset}")


def test_kazoo_threading_handler_select() -> None:
    from kazoo.handlers.threading import KazooTimeoutError, SequentialThreadingHandler

    handler = SequentialThreadingHandler()
    assert callable(getattr(handler, "select", None)), _fail(
        "kazoo", "SequentialThreadingHandler.select", "nodepool_ng/zk/handler.py", "is gone")
    assert handler.timeout_exception is KazooTimeoutError, _fail(
        "kazoo", "SequentialThreadingHandler.timeout_exception", KAZOO_CONN, "changed")


# --- openstacksdk --------------------------------------------------------------------------

OS_SERVERS = "nodepool_ng/drivers/openstack/servers.py"


def test_openstacksdk_connection_private_methods() -> None:
    from openstack.connection import Connection

    assume_params("openstacksdk", Connection, "_encode_server_userdata", ["userdata"],
                  OS_SERVERS)
    encoded = Connection._encode_server_userdata(None, "#!/bin/sh\n")  # type: ignore[arg-type]
    assert encoded == base64.b64encode(b"#!/bin/sh\n").decode(), _fail(
        "openstacksdk", "Connection._encode_server_userdata", OS_SERVERS, "changed behaviour")
    assume_params("openstacksdk", Connection, "_needs_floating_ip",
                  ["server", "nat_destination"], OS_SERVERS)
    assume_params("openstacksdk", Connection, "_has_floating_ips", [], OS_SERVERS)
    assume_params("openstacksdk", Connection, "_delete_server_floating_ips",
                  ["server", "delete_ip_retry"], OS_SERVERS)
    assume_params("openstacksdk", Connection, "has_service", ["service_key", "version"],
                  "nodepool_ng/drivers/openstack/sdk.py")


def test_openstacksdk_helper_modules() -> None:
    from openstack import utils
    from openstack.cloud import meta
    from openstack.compute.v2 import server

    assume_params("openstacksdk", meta, "add_server_interfaces", ["cloud", "server"],
                  OS_SERVERS)
    # remember_service_lookups (sdk.py) exists because add_server_interfaces asks this.
    assert "has_service(" in inspect.getsource(meta), _fail(
        "openstacksdk", "openstack.cloud.meta's has_service calls",
        "nodepool_ng/drivers/openstack/sdk.py", "are gone (the cache is useless)")
    assume_params("openstacksdk", server.Server, "_get_microversion", ["session"], OS_SERVERS)
    munch = getattr(utils, "Munch", None)
    assert munch is not None and munch(a=1).a == 1 and isinstance(munch(), dict), _fail(
        "openstacksdk", "openstack.utils.Munch", OS_SERVERS, "is gone or no attribute dict")


# --- keystoneauth1, requests ---------------------------------------------------------------

OS_SDK = "nodepool_ng/drivers/openstack/sdk.py"


def test_keystoneauth_session_wraps_a_requests_session() -> None:
    import requests
    from keystoneauth1.session import Session

    session = Session()
    assert isinstance(getattr(session, "session", None), requests.Session), _fail(
        "keystoneauth1", "Session.session", OS_SDK, "is no requests.Session")
    assert session.verify is True, _fail(
        "keystoneauth1", "Session.verify", OS_SDK, "no longer defaults to True")
    assert session.session.trust_env is True, _fail(
        "requests", "Session.trust_env", OS_SDK, "is gone or no longer defaults to True")
    assert "trust_env" in inspect.getsource(requests.Session.merge_environment_settings), \
        _fail("requests", "Session.merge_environment_settings", OS_SDK,
              "no longer reads trust_env")


# --- botocore ------------------------------------------------------------------------------


class _Stop(Exception):
    pass


def test_botocore_before_call_event_gets_the_operation_model() -> None:
    import boto3

    session = boto3.Session(aws_access_key_id="x", aws_secret_access_key="x",
                            region_name="us-east-1")
    ec2 = session.client("ec2", endpoint_url="http://127.0.0.1:9")
    seen: list[str] = []

    def handler(model: Any = None, **kwargs: Any) -> None:
        seen.append(getattr(model, "name", ""))
        raise _Stop  # before any request is sent

    ec2.meta.events.register("before-call.ec2.*", handler)
    with pytest.raises(_Stop):
        ec2.describe_instances()
    assert seen == ["DescribeInstances"], _fail(
        "botocore", "the before-call.ec2.* event's model= argument",
        "nodepool_ng/drivers/aws/api.py", f"changed: handlers saw {seen}")


# --- the pins --------------------------------------------------------------------------------


def test_constraints_pin_every_runtime_dependency_within_its_bounds() -> None:
    """constraints.txt pins each `install_requires` entry of setup.cfg to a version its
    bounds allow (a bound raised without a new pin, or the reverse, fails here)."""
    root = Path(__file__).resolve().parents[2]
    setup = configparser.ConfigParser()
    setup.read(root / "setup.cfg")
    requires = [Requirement(line) for line in
                setup["options"]["install_requires"].strip().splitlines()]
    pins = {}
    for line in (root / "constraints.txt").read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            name, _, version = line.partition("==")
            pins[canonicalize_name(name)] = version.strip()
    problems = []
    for req in requires:
        pinned = pins.get(canonicalize_name(req.name))
        if pinned is None:
            problems.append(f"{req.name}: not pinned")
        elif not req.specifier.contains(pinned, prereleases=True):
            problems.append(f"{req.name}=={pinned} outside setup.cfg's {req.specifier}")
    assert not problems, f"constraints.txt vs setup.cfg: {problems}"
