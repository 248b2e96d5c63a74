"""Leader election on a coordination.k8s.io Lease, so two operator replicas are safe: exactly one writes.

The decision (`may_take`) is pure; `LeaseElector` is the thin loop around it. Taking over a Lease is a
replace with the resourceVersion just read, so two candidates racing for an expired Lease get one 409.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
from collections.abc import Callable

from lightkube import AsyncClient
from lightkube.core.exceptions import ApiError
from lightkube.models.coordination_v1 import LeaseSpec
from lightkube.models.meta_v1 import ObjectMeta
from lightkube.resources.coordination_v1 import Lease

log = logging.getLogger(__name__)


def _utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def may_take(spec: LeaseSpec | None, me: str, now: dt.datetime) -> bool:
    """Whether `me` may hold the Lease now: it is free, already mine, or its holder stopped renewing it."""
    if spec is None or not spec.holderIdentity or spec.holderIdentity == me:
        return True
    if spec.renewTime is None:
        return True
    renewed = spec.renewTime if spec.renewTime.tzinfo else spec.renewTime.replace(tzinfo=dt.UTC)
    return now > renewed + dt.timedelta(seconds=spec.leaseDurationSeconds or 15)


class LeaseElector:
    def __init__(self, client: AsyncClient, namespace: str, name: str, identity: str, *, duration_s: int = 15,
                 renew_s: float = 5.0, clock: Callable[[], dt.datetime] = _utcnow,
                 on_change: Callable[[bool], None] = lambda leading: None) -> None:
        self.client, self.namespace, self.name, self.identity = client, namespace, name, identity
        self.duration_s, self.renew_s, self.clock = duration_s, renew_s, clock
        self.on_change = on_change
        self.leader = asyncio.Event()

    async def try_once(self) -> bool:
        """Acquire or renew; returns whether this replica leads now."""
        now = self.clock()
        try:
            lease = await self.client.get(Lease, self.name, namespace=self.namespace)
        except ApiError as e:
            if e.status.code != 404:
                raise
            lease = None
        if lease is None:
            spec = LeaseSpec(holderIdentity=self.identity, leaseDurationSeconds=self.duration_s, acquireTime=now,
                             renewTime=now, leaseTransitions=0)
            try:
                await self.client.create(Lease(metadata=ObjectMeta(name=self.name, namespace=self.namespace),
                                               spec=spec))
            except ApiError as e:
                if e.status.code != 409:
                    raise
                return self._set(False)
            return self._set(True)
        if not may_take(lease.spec, self.identity, now):
            return self._set(False)
        spec = lease.spec or LeaseSpec()
        if spec.holderIdentity != self.identity:
            spec.leaseTransitions = (spec.leaseTransitions or 0) + 1
            spec.acquireTime = now
            spec.holderIdentity = self.identity
        spec.renewTime = now
        spec.leaseDurationSeconds = self.duration_s
        lease.spec = spec
        try:
            await self.client.replace(lease)
        except ApiError as e:
            if e.status.code != 409:
                raise
            return self._set(False)
        return self._set(True)

    def _set(self, leading: bool) -> bool:
        if leading and not self.leader.is_set():
            log.info("%s now leads (lease %s/%s)", self.identity, self.namespace, self.name)
            self.leader.set()
            self.on_change(True)
        elif not leading and self.leader.is_set():
            log.warning("%s lost the lease %s/%s", self.identity, self.namespace, self.name)
            self.leader.clear()
            self.on_change(False)
        return leading

    async def release(self) -> None:
        """On a clean stop, hand the Lease back so a follower takes over now, not after leaseDurationSeconds."""
        if not self.leader.is_set():
            return
        self._set(False)
        try:
            lease = await self.client.get(Lease, self.name, namespace=self.namespace)
            if lease.spec and lease.spec.holderIdentity == self.identity:
                lease.spec.holderIdentity = None
                lease.spec.renewTime = None
                await self.client.replace(lease)
        except ApiError as e:  # the Lease then simply expires
            log.warning("could not release lease %s/%s: %s", self.namespace, self.name, e)

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            try:
                await self.try_once()
            except Exception as e:  # the API being away must not kill the elector; stop leading instead
                log.warning("lease %s/%s: %s", self.namespace, self.name, e)
                self._set(False)
            try:
                await asyncio.wait_for(stop.wait(), timeout=self.renew_s)
            except TimeoutError:
                pass
        await self.release()
