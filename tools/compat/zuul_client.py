"""Play the Zuul 14.3 scheduler against a launcher, with Zuul's own classes (no copies).

Run with the zuul14 venv's python (tools/compat/setup-venvs.sh):

    /opt/compat/zuul14/bin/python tools/compat/zuul_client.py --hosts 127.0.0.1:PORT/chroot \
        --cert client.crt --key client.key --ca ca.pem --labels small,big

Steps, each with Zuul's code: `ZooKeeperNodepool` with the scheduler's request cache and
completion callback; `model.NodeRequest` submitted with `submitNodeRequest`; on COMPLETED,
`Nodepool.acceptNodes` (updateNode, allocated_to check, lock, delete request),
`useNodeSet` (in-use + user_data), `returnNodeSet` (used + unlock). Prints one JSON object
(the request as Zuul saw it, the nodes as Zuul read them, registered launchers) and exits 0,
or prints the failure to stderr and exits 1.
"""

from __future__ import annotations

import argparse
import configparser
import json
import sys
import threading
import uuid
from typing import Any

from zuul import model
from zuul.lib.tracing import Tracing
from zuul.nodepool import Nodepool
from zuul.zk import ZooKeeperClient
from zuul.zk.nodepool import NodeRequestEvent, ZooKeeperNodepool

# Attributes Zuul's executor reads from a node to build the Ansible inventory.
NODE_FIELDS = ("id", "state", "label", "allocated_to", "provider", "cloud", "region", "az",
               "interface_ip", "public_ipv4", "private_ipv4", "connection_port",
               "connection_type", "username", "python_path", "shell_type", "host_keys",
               "external_id", "host_id", "resources", "attributes", "user_data", "type")


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--hosts", required=True)
    parser.add_argument("--cert", required=True)
    parser.add_argument("--key", required=True)
    parser.add_argument("--ca", required=True)
    parser.add_argument("--labels", required=True, help="comma-separated node_types")
    parser.add_argument("--timeout", type=float, default=60.0)
    args = parser.parse_args()
    labels = args.labels.split(",")
    # As every Zuul service does at start: a tracer provider (tracing itself disabled).
    Tracing(configparser.ConfigParser())

    zk = ZooKeeperClient(args.hosts, tls_cert=args.cert, tls_key=args.key, tls_ca=args.ca)
    zk.connect()
    completed = threading.Event()
    seen: dict[str, Any] = {}

    def on_event(request: model.NodeRequest, event: NodeRequestEvent) -> None:
        if event == NodeRequestEvent.COMPLETED and request.id == seen.get("id"):
            seen["request"] = request
            completed.set()

    try:
        cache = ZooKeeperNodepool(zk, enable_node_request_cache=True,
                                  node_request_event_callback=on_event)
        system_id = f"zuul-{uuid.uuid4().hex[:8]}"
        nodepool = Nodepool(zk, system_id, statsd=None)
        request = model.NodeRequest(
            system_id, build_set_uuid=uuid.uuid4().hex, tenant_name="tenant-one",
            pipeline_name="check", job_uuid=uuid.uuid4().hex, job_name="compat-job",
            labels=labels, provider=None, relative_priority=0, event_id=uuid.uuid4().hex)
        cache.submitNodeRequest(request, 200)
        seen["id"] = request.id
        if not completed.wait(args.timeout):
            raise RuntimeError(f"request {request.id} not completed in {args.timeout}s "
                               "(Zuul's request cache never saw fulfilled/failed)")
        done = seen["request"]
        nodeset = model.NodeSet()
        for i, label in enumerate(labels):
            nodeset.addNode(model.Node([f"node{i}"], label))
        out: dict[str, Any] = {
            "request_id": done.id, "state": done.state, "nodes": list(done.nodes),
            "relative_priority": done.relative_priority, "event_id": done.event_id,
            "requestor": done.requestor, "tenant_name": done.tenant_name,
            "launchers": [{"id": ln.id, "supported_labels": sorted(ln.supported_labels)}
                          for ln in cache.getRegisteredLaunchers()],
        }
        if done.state != model.STATE_FULFILLED:
            print(json.dumps(out))
            return 0
        nodepool.acceptNodes(done, nodeset)
        out["request_exists_after_accept"] = cache.nodeRequestExists(done)
        out["accepted"] = [{f: getattr(n, f, None) for f in NODE_FIELDS}
                           for n in nodeset.getNodes()]
        nodepool.useNodeSet(nodeset, "tenant-one", "org/project", done.event_id)
        out["in_use"] = [json.loads(zk.client.get(f"/nodepool/nodes/{n.id}")[0])["state"]
                         for n in nodeset.getNodes()]
        nodepool.returnNodeSet(nodeset, None, "tenant-one", "org/project", 1.0,
                               done.event_id)
        print(json.dumps(out, default=str))
        return 0
    except Exception as e:
        print(f"zuul_client: {type(e).__name__}: {e}", file=sys.stderr)
        return 1
    finally:
        zk.disconnect()


if __name__ == "__main__":
    sys.exit(main())
