"""The cluster's shared API client must not run out of connections when every node's agent holds a watch open."""

from __future__ import annotations

import asyncio
import contextlib

from lightkube.resources.core_v1 import Namespace, Node

from ccgpu.kube.client import make_async_client
from ccgpu.sim.apiserver import ApiServer
from ccgpu.sim.cluster import Cluster, parse_nodes

WATCHES = 110  # more than httpx's default pool of 100 connections


async def _watch_forever(client) -> None:
    async for _ in client.watch(Node):
        pass


async def test_shared_client_still_answers_while_more_watches_than_the_default_pool_are_open(tmp_path):
    """At 100 simulated nodes, the cc-managers' node watches took all of httpx's 100 default connections and
    every other request of the cluster waited for the pool until it timed out (the cluster never converged)."""
    cluster = Cluster(parse_nodes("1xh200-snp", 30), tmp_path)
    cluster.api = await asyncio.to_thread(lambda: ApiServer().start_in_thread())
    client = cluster._make_client(make_async_client)
    watchers = [asyncio.create_task(_watch_forever(client)) for _ in range(WATCHES)]
    try:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 20
        while cluster.api.metrics.count("watch", "nodes") < WATCHES:
            assert loop.time() < deadline, f"only {cluster.api.metrics.count('watch', 'nodes')} watches opened"
            await asyncio.sleep(0.05)
        names = await asyncio.wait_for(_names(client), timeout=5)
        assert "default" in names
    finally:
        for w in watchers:
            w.cancel()
        with contextlib.suppress(Exception):
            await asyncio.gather(*watchers, return_exceptions=True)
        await client.close()
        await asyncio.to_thread(cluster.api.stop_thread)


async def _names(client) -> list[str]:
    return [ns.metadata.name async for ns in client.list(Namespace)]
