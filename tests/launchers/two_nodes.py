"""A two-node Ray cluster on 127.0.0.1 (`ray.cluster_utils.Cluster`, one CPU per node), run in a process
of its own: Ray reads its authentication mode once per process, so a cluster started inside a test
process would inherit whatever an earlier test of that process left there.

    python -m tests.launchers.two_nodes     (environment: the token, RAY_AUTH_MODE=token, RAY_TMPDIR)

prints one JSON line, {"address": ..., "node_ids": [...]}, then keeps the cluster until its standard
input closes."""

from __future__ import annotations

import json
import sys

from orchestrator.net import free_port


def main() -> None:
    from ray.cluster_utils import Cluster

    node = {"node_ip_address": "127.0.0.1", "num_cpus": 1}
    head = {**node, "include_dashboard": True, "dashboard_host": "127.0.0.1", "dashboard_port": free_port()}
    cluster = Cluster(initialize_head=True, head_node_args=head)
    try:
        cluster.add_node(**node)
        cluster.wait_for_nodes()
        node_ids = sorted(n.node_id for n in cluster.list_all_nodes())
        print(json.dumps({"address": cluster.address, "node_ids": node_ids}), flush=True)
        sys.stdin.read()  # until the test closes it
    finally:
        cluster.shutdown()


if __name__ == "__main__":
    main()
