"""The 3-member ensemble fixture: leader found by `srvr`, kill/start by Popen, a client's
session surviving a leader kill and a restart of every member."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest
from kazoo.client import KazooClient
from kazoo.protocol.states import KazooState
from kazoo.retry import KazooRetry

from tests.fixtures.zk_ensemble import ZooKeeperEnsemble


@pytest.fixture
def ensemble() -> Iterator[ZooKeeperEnsemble]:
    with ZooKeeperEnsemble() as e:
        yield e


def _client(ensemble: ZooKeeperEnsemble) -> KazooClient:
    client = KazooClient(
        hosts=ensemble.hosts,
        timeout=20.0,
        connection_retry=KazooRetry(max_tries=-1, delay=0.1, max_delay=1.0),
        command_retry=KazooRetry(max_tries=-1, delay=0.1, max_delay=1.0, deadline=60),
    )
    client.start(timeout=20)
    return client


def _wait(what: str, check: object, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():  # type: ignore[operator]
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def test_client_keeps_its_session_across_a_leader_kill(ensemble: ZooKeeperEnsemble) -> None:
    leader = ensemble.leader()
    assert leader in (1, 2, 3)
    assert sorted(ensemble.mode(m) or "" for m in (1, 2, 3)) == ["follower", "follower", "leader"]
    client = _client(ensemble)
    try:
        session = client.client_id
        client.create("/eph", b"x", ephemeral=True)
        states: list[str] = []
        client.add_listener(lambda s: states.append(s))

        ensemble.kill(leader)
        assert ensemble.mode(leader) is None
        old_process = ensemble.members[leader].process
        assert old_process is not None and old_process.returncode is not None
        _wait("a new leader", lambda: ensemble.leader() not in (None, leader))
        # Writes need the new leader; retried across the election.
        client.retry(client.set, "/eph", b"y")
        assert client.client_id == session
        assert client.state == KazooState.CONNECTED
        assert client.retry(client.get, "/eph")[0] == b"y"

        ensemble.start(leader)
        assert ensemble.mode(leader) == "follower"
        assert ensemble.members[leader].process is not old_process
        assert ensemble.members[leader].starts == 2
        assert client.client_id == session
    finally:
        client.stop()
        client.close()


def test_restart_all_keeps_data_and_session(ensemble: ZooKeeperEnsemble) -> None:
    client = _client(ensemble)
    try:
        session = client.client_id
        client.create("/persist", b"1")
        client.create("/eph", b"x", ephemeral=True)
        lost: list[str] = []
        client.add_listener(lambda s: lost.append(s) if s == KazooState.SUSPENDED else None)

        outage = ensemble.restart_all()
        assert outage < 60
        assert ensemble.leader() is not None
        assert all(m.starts == 2 for m in ensemble.members.values())
        assert client.retry(client.get, "/persist")[0] == b"1"
        _wait("the client reconnected", lambda: client.state == KazooState.CONNECTED)
        assert lost, "the client never saw the ensemble go away"
        # The ensemble was back within the 20 s session timeout: the session (and with it the
        # ephemeral node) survives, as launchers' sessions must.
        assert client.client_id == session
        assert client.retry(client.exists, "/eph") is not None
    finally:
        client.stop()
        client.close()
