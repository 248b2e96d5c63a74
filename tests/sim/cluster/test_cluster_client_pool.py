"""Node watches in the cluster-in-a-box do not grow with the node count: each cc-manager watches its node
through the shared node informer, so the shared API client keeps a small fixed pool (at 100 nodes, one watch
connection per cc-manager once took every pooled connection, and a pool sized to the cluster made every
request probe hundreds of idle sockets)."""

from __future__ import annotations

import pytest

from ccgpu.sim.cluster import Cluster, parse_nodes

pytestmark = pytest.mark.timeout(90)



async def test_cc_managers_watch_their_nodes_without_a_watch_connection_each(workdir):
    c = Cluster(parse_nodes("3x1xh200-snp"), workdir)
    await c.start()
    try:
        await c.apply_policy()
        report = await c.wait_converged(60)
        assert report.ok, report.failed()
        cc_managers = [k for k, run in c.daemonsets.running.items()
                       if k[1] == "nvidia-cc-manager" and run.task is not None and not run.task.done()]
        assert len(cc_managers) == 3
        node_watches = len(c.api.store._watchers.get(c.api.resource_type("v1", "Node").key, ()))
        assert node_watches <= 2, f"{node_watches} node watches: the informer's and the operator's, no agent's"
    finally:
        await c.stop()
