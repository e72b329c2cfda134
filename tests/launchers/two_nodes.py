"""A two-node Ray cluster on 127.0.0.1 (`ray.cluster_utils.Cluster`, one CPU per node), run in a process
of its own: Ray reads its authentication mode once per process, so a cluster started inside a test
process would inherit whatever an earlier test of that process left there.

    python -m tests.launchers.two_nodes ROOT   (environment: the token, RAY_AUTH_MODE=token, RAY_TMPDIR)

Each node has directories of its own under ROOT (``node-0``, ``node-1``): its data cache and its
checkpoint scratch space, as two machines that share no disk would. Prints one JSON line,
{"address": ..., "node_ids": [...], "node_dirs": {node id: directory}}, then keeps the cluster until
its standard input closes."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from orchestrator.net import free_port


def _own(root: Path, index: int) -> dict[str, str]:
    """A node's own disk: its data cache and checkpoint scratch, shared with no other node."""
    home = root / f"node-{index}"
    return {"ORCHESTRATOR_CACHE_DIR": str(home / "cache"), "ORCHESTRATOR_SCRATCH_DIR": str(home / "scratch")}


def main() -> None:
    from ray.cluster_utils import Cluster

    root = Path(sys.argv[1])
    node = {"node_ip_address": "127.0.0.1", "num_cpus": 1}
    dashboard = {"include_dashboard": True, "dashboard_host": "127.0.0.1", "dashboard_port": free_port()}
    cluster = Cluster(initialize_head=True, head_node_args={**node, **dashboard, "env_vars": _own(root, 0)})
    try:
        cluster.add_node(**node, env_vars=_own(root, 1))
        cluster.wait_for_nodes()
        nodes = cluster.list_all_nodes()
        dirs = {n.node_id: str(root / f"node-{i}") for i, n in enumerate(nodes)}
        started = {"address": cluster.address, "node_ids": sorted(dirs), "node_dirs": dirs}
        print(json.dumps(started), flush=True)
        sys.stdin.read()  # until the test closes it
    finally:
        cluster.shutdown()


if __name__ == "__main__":
    main()
