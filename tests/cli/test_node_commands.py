"""`nodepool` node, request, label and provider commands against real ZooKeeper."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest
from kazoo.client import KazooClient

from nodepool_ng.model.node import Node, NodeState
from nodepool_ng.zk.client import ZooKeeperClient
from nodepool_ng.zk.nodes import NodeStore
from tests.cli.conftest import CliResult, read_json, write_node
from tests.fixtures.zookeeper import ZooKeeperChroot

Run = Callable[..., CliResult]


def test_list_columns_and_rows(run_cli: Run, kazoo_client: KazooClient) -> None:
    write_node(kazoo_client, "0000000001")
    write_node(kazoo_client, "0000000002", provider="cloud2", type=["large"], state="in-use")
    result = run_cli("list")
    assert result.rc == 0, result.err
    lines = result.out.splitlines()
    assert [c.strip() for c in lines[1].strip("|").split("|")] == [
        "ID",
        "Provider",
        "Label",
        "Server ID",
        "Public IPv4",
        "IPv6",
        "State",
        "Age",
        "Locked",
    ]
    row = [c.strip() for c in lines[3].strip("|").split("|")]
    assert row[:7] == [
        "0000000001",
        "cloud1",
        "small",
        "server-0000000001",
        "127.0.0.5",
        "None",
        "ready",
    ]
    assert row[7].startswith("00:01:02:0")  # written with state_time 3725 s ago
    assert row[8] == "unlocked"
    assert "0000000002" in lines[4] and "in-use" in lines[4]


def test_list_detail_and_json(run_cli: Run, kazoo_client: KazooClient) -> None:
    write_node(kazoo_client, "0000000003", comment="held for debugging", hold_job="job1")
    detail = run_cli("list", "--detail")
    assert detail.rc == 0
    header = [c.strip() for c in detail.out.splitlines()[1].strip("|").split("|")]
    assert header[9:] == [
        "Pool",
        "Hostname",
        "Private IPv4",
        "AZ",
        "Username",
        "Port",
        "Launcher",
        "Allocated To",
        "Hold Job",
        "Comment",
        "User Data",
        "Driver Data",
    ]
    assert "held for debugging" in detail.out
    rows = run_cli("--json", "list", "--detail").json()
    assert rows[0]["id"] == "0000000003"
    assert rows[0]["hold_job"] == "job1"
    assert rows[0]["connection_port"] == 22
    short = run_cli("--json", "list").json()
    assert set(short[0]) == {
        "id",
        "provider",
        "label",
        "server_id",
        "public_ipv4",
        "ipv6",
        "state",
        "age",
        "locked",
    }


def test_list_shows_nodes_created_through_the_store(
    run_cli: Run, zk_chroot: ZooKeeperChroot
) -> None:
    client = ZooKeeperClient(zk_chroot.hosts)
    client.start()
    try:
        store = NodeStore(client)
        node = Node(state=NodeState.BUILDING, provider="cloud2", pool="main", type=["large"])
        node_id = store.create(node)
        store.lock(node)
        rows = run_cli("--json", "list").json()
        assert [(r["id"], r["state"], r["locked"]) for r in rows] == [
            (node_id, "building", "locked")
        ]
        store.unlock(node)
    finally:
        client.stop()


def test_request_list(run_cli: Run, kazoo_client: KazooClient) -> None:
    zuul_request = {
        "state": "pending",
        "state_time": 1.0,
        "node_types": ["small", "large"],
        "requestor": "zuul",
        "requestor_data": {"job_name": "j"},
        "provider": None,
        "relative_priority": 2,
        "event_id": "e-1",
        "tenant_name": "t",
        "declined_by": ["lp-1"],
        "nodes": ["0000000001"],
    }
    kazoo_client.create(
        "/nodepool/requests/100-0000000003", json.dumps(zuul_request).encode(), makepath=True
    )
    result = run_cli("request-list")
    assert result.rc == 0
    lines = result.out.splitlines()
    assert [c.strip() for c in lines[1].strip("|").split("|")] == [
        "Request ID",
        "Priority",
        "State",
        "Requestor",
        "Node Types",
        "Nodes",
        "Declined By",
        "Event ID",
    ]
    assert [c.strip() for c in lines[3].strip("|").split("|")] == [
        "100-0000000003",
        "2",
        "pending",
        "zuul",
        "small,large",
        "0000000001",
        "lp-1",
        "e-1",
    ]
    assert run_cli("--json", "request-list").json()[0]["node_types"] == ["small", "large"]


def test_label_list_from_pool_components(run_cli: Run, kazoo_client: KazooClient) -> None:
    for i, labels in enumerate((["small"], ["large", "small"])):
        pool = {
            "hostname": "h",
            "state": "running",
            "kind": "pool",
            "version": "1",
            "model_api": 0,
            "id": f"h-PoolWorker.cloud{i}-main-x",
            "name": "main",
            "provider_name": f"cloud{i}",
            "supported_labels": labels,
            "priority": 100,
            "paused": False,
        }
        kazoo_client.create(
            "/nodepool/components/pool/h",
            json.dumps(pool).encode(),
            makepath=True,
            ephemeral=True,
            sequence=True,
        )
    result = run_cli("label-list")
    assert result.rc == 0
    assert [line.strip("| ") for line in result.out.splitlines()[3:5]] == ["large", "small"]
    assert run_cli("--json", "label-list").json() == [{"label": "large"}, {"label": "small"}]


def test_delete_marks_deleting_and_keeps_unknown_keys(
    run_cli: Run, kazoo_client: KazooClient
) -> None:
    write_node(kazoo_client, "0000000004")
    result = run_cli("delete", "0000000004")
    assert result.rc == 0, result.err
    assert "0000000004" in result.out and "deleting" in result.out
    data = read_json(kazoo_client, "/nodepool/nodes/0000000004")
    assert data["state"] == "deleting"
    assert data["zuul_extra"] == "kept"
    # The CLI released its lock.
    assert kazoo_client.get_children("/nodepool/nodes/0000000004/lock") == []


def test_delete_unknown_node_fails_cleanly(run_cli: Run, kazoo_client: KazooClient) -> None:
    result = run_cli("delete", "0000000999")
    assert result.rc == 1
    assert result.err.startswith("nodepool: error: node 0000000999 not found")
    assert "Traceback" not in result.err
    assert result.out == ""


def test_delete_refuses_a_node_locked_elsewhere(
    run_cli: Run, kazoo_client: KazooClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("nodepool_ng.statusdata.NODE_LOCK_TIMEOUT", 0.5)
    write_node(kazoo_client, "0000000005")
    lock = kazoo_client.Lock("/nodepool/nodes/0000000005/lock", "zuul")
    assert lock.acquire(blocking=False)
    try:
        result = run_cli("delete", "0000000005")
    finally:
        lock.release()
    assert result.rc == 1
    assert "0000000005" in result.err and "Traceback" not in result.err
    assert read_json(kazoo_client, "/nodepool/nodes/0000000005")["state"] == "ready"


def test_hold_sets_state_and_reason(run_cli: Run, kazoo_client: KazooClient) -> None:
    write_node(kazoo_client, "0000000006")
    result = run_cli("--json", "hold", "0000000006", "--reason", "debug me")
    assert result.rc == 0, result.err
    assert result.json()[0]["state"] == "hold"
    data = read_json(kazoo_client, "/nodepool/nodes/0000000006")
    assert (data["state"], data["comment"]) == ("hold", "debug me")
    assert run_cli("hold", "0000000404").rc == 1


def _upload(kazoo_client: KazooClient, provider: str, build: str, upload: str) -> None:
    if not kazoo_client.exists(f"/nodepool/images/debian/builds/{build}"):
        kazoo_client.create(
            f"/nodepool/images/debian/builds/{build}",
            json.dumps({"state": "ready", "state_time": 1.0}).encode(),
            makepath=True,
        )
    kazoo_client.create(
        f"/nodepool/images/debian/builds/{build}/providers/{provider}/images/{upload}",
        json.dumps(
            {
                "state": "ready",
                "state_time": 2.0,
                "external_id": f"img-{upload}",
                "external_name": "debian-1",
                "format": "qcow2",
            }
        ).encode(),
        makepath=True,
    )


def test_info_and_erase(run_cli: Run, kazoo_client: KazooClient) -> None:
    _upload(kazoo_client, "cloud1", "b1", "0000000000")
    _upload(kazoo_client, "cloud1", "b1", "0000000001")
    _upload(kazoo_client, "cloud2", "b2", "0000000000")
    write_node(kazoo_client, "0000000001", provider="cloud1")
    write_node(kazoo_client, "0000000002", provider="cloud2")

    info = run_cli("info", "cloud1")
    assert info.rc == 0, info.err
    assert "ZooKeeper image data for provider cloud1" in info.out
    assert "| debian     | b1       | 0000000000,0000000001 |" in info.out
    assert "| 0000000001 | server-0000000001 |" in info.out
    assert "0000000002" not in info.out
    assert run_cli("--json", "info", "cloud1").json()["nodes"] == [
        {"id": "0000000001", "server_id": "server-0000000001"}
    ]

    erased = run_cli("erase", "cloud1", "--force")
    assert erased.rc == 0, erased.err
    assert not kazoo_client.exists("/nodepool/images/debian/builds/b1/providers/cloud1")
    assert not kazoo_client.exists("/nodepool/nodes/0000000001")
    # The other provider's data is untouched, and so is the build itself.
    assert kazoo_client.exists(
        "/nodepool/images/debian/builds/b2/providers/cloud2/images/0000000000"
    )
    assert kazoo_client.exists("/nodepool/nodes/0000000002")
    assert kazoo_client.exists("/nodepool/images/debian/builds/b1")


def test_erase_asks_first(
    run_cli: Run, kazoo_client: KazooClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    write_node(kazoo_client, "0000000001", provider="cloud1")
    monkeypatch.setattr("builtins.input", lambda prompt: "n")
    result = run_cli("erase", "cloud1")
    assert result.rc == 1
    assert kazoo_client.exists("/nodepool/nodes/0000000001")
    monkeypatch.setattr("builtins.input", lambda prompt: "y")
    assert run_cli("erase", "cloud1").rc == 0
    assert not kazoo_client.exists("/nodepool/nodes/0000000001")


def test_config_validate(run_cli: Run, tmp_path: Path, np_config: Path) -> None:
    good = run_cli("config-validate")
    assert good.rc == 0, good.err
    bad = tmp_path / "bad.yaml"
    bad.write_text(np_config.read_text().replace("flavor-name: m1.large", "flavor-name: [1, 2]"))
    result = run_cli("config-validate", config=bad)
    assert result.rc == 1
    assert "providers[1].pools[0].labels[0]" in result.err
    assert "Traceback" not in result.err
    missing = run_cli("config-validate", config=tmp_path / "nope.yaml")
    assert missing.rc == 1 and "nope.yaml" in missing.err


def test_config_validate_needs_no_zookeeper(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from nodepool_ng.cmd.admin import main

    cfg = tmp_path / "np.yaml"
    # Port 1 on loopback: nothing listens, so any connection attempt would fail.
    cfg.write_text("zookeeper-servers:\n  - host: 127.0.0.1\n    port: 1\nlabels: []\n")
    assert main(["-c", str(cfg), "config-validate"]) == 0


def test_errors_without_zookeeper_are_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from nodepool_ng.cmd.admin import main

    cfg = tmp_path / "np.yaml"
    cfg.write_text("zookeeper-servers:\n  - host: 127.0.0.1\n    port: 1\nzookeeper-timeout: 1\n")
    rc = main(["-c", str(cfg), "list"])
    err = capsys.readouterr().err
    assert rc == 1
    assert err.startswith("nodepool: error: ") and "Traceback" not in err


def test_missing_command_and_missing_config(run_cli: Run, tmp_path: Path) -> None:
    from nodepool_ng.cmd.admin import main

    assert main([]) == 1
    result = run_cli("list", config=tmp_path / "absent.yaml")
    assert result.rc == 1 and "absent.yaml" in result.err


def test_debug_shows_the_traceback(run_cli: Run) -> None:
    quiet = run_cli("delete", "0000000404")
    loud = run_cli("--debug", "delete", "0000000404")
    assert quiet.rc == loud.rc == 1
    assert "Traceback" not in quiet.err
    assert "Traceback" in loud.err and "nodepool: error: node 0000000404 not found" in loud.err
