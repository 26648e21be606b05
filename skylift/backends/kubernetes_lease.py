"""Leader election on a ``coordination.k8s.io/v1`` Lease: one acting controller per Deployment.

Beside :mod:`skylift.store.lease` (one controller per *store*), this lease makes two
skylift controllers with separate stores (two pods, two hosts) never both scale the
same Deployment. It follows client-go's ``leaderelection`` rules:

- the holder renews ``spec.renewTime`` every tick; a candidate takes over only when
  the record it observed has not changed for ``leaseDurationSeconds`` *by its own
  monotonic clock* (so clock skew between hosts does not matter), or when
  ``holderIdentity`` is empty (released);
- every write is a PUT carrying the ``resourceVersion`` just read (a create for a
  missing Lease): a 409 Conflict means another candidate wrote first, and this one
  holds nothing;
- the holder trusts its lease for only half the duration after the *start* of its
  last successful renewal; past that it acts on nothing until it renews again.

:func:`judge` is the pure decision; :class:`KubernetesLease` does the two calls.
"""

from __future__ import annotations

import datetime
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

from lightkube import ApiError, AsyncClient
from lightkube.models.coordination_v1 import LeaseSpec
from lightkube.models.meta_v1 import ObjectMeta
from lightkube.resources.coordination_v1 import Lease

Clock = Callable[[], float]
WallClock = Callable[[], datetime.datetime]
Verdict = Literal["renew", "take", "wait"]


@dataclass(frozen=True, slots=True)
class Observed:
    """The Lease record as last seen and when (monotonic) it was first seen like that."""

    holder: str
    renew_time: str
    transitions: int
    at: float


def judge(observed: Observed | None, identity: str, duration: float, now: float) -> Verdict:
    """What to do with the Lease: keep it, take it over, or wait.

    ``observed`` None: there is no Lease yet (take = create it).
    """
    if observed is None or not observed.holder:
        return "take"
    if observed.holder == identity:
        return "renew"
    if now - observed.at >= duration:
        return "take"  # the holder has not renewed for a whole duration
    return "wait"


def _micro(at: datetime.datetime) -> datetime.datetime:
    return at.astimezone(datetime.UTC)


class KubernetesLease:
    """Acquire and renew one Lease; :meth:`trusted` says whether this process may act now."""

    def __init__(
        self,
        client: AsyncClient,
        name: str,
        namespace: str,
        identity: str,
        duration: float,
        *,
        clock: Clock = time.monotonic,
        wall: WallClock | None = None,
    ) -> None:
        self.client = client
        self.name = name
        self.namespace = namespace
        self.identity = identity
        self.duration = duration
        self._clock = clock
        self._wall = wall or (lambda: datetime.datetime.now(datetime.UTC))
        self._observed: Observed | None = None
        self._trusted_until = float("-inf")
        self.holder: str = ""  # who holds it, as last read ("" when nobody)

    def trusted(self) -> bool:
        """True while a renewal started less than ``duration / 2`` ago succeeded."""
        return self._clock() < self._trusted_until

    def describe(self) -> str:
        return f"Lease {self.namespace}/{self.name}"

    async def step(self) -> bool:
        """One round: read the Lease, then renew, take or wait. True when held now.

        Raises :class:`lightkube.ApiError` for answers other than 404/409, and
        ``httpx`` errors when the apiserver does not answer (the caller times out).
        """
        started = self._clock()
        try:
            lease = await self.client.get(Lease, self.name, namespace=self.namespace)
        except ApiError as exc:
            if exc.status.code != 404:
                raise
            return await self._create(started)
        spec = lease.spec or LeaseSpec()
        record = (
            spec.holderIdentity or "",
            spec.renewTime.isoformat() if spec.renewTime else "",
            spec.leaseTransitions or 0,
        )
        seen = self._observed
        if seen is None or (seen.holder, seen.renew_time, seen.transitions) != record:
            self._observed = Observed(*record, at=started)
        self.holder = record[0]
        verdict = judge(self._observed, self.identity, self.duration, started)
        if verdict == "wait":
            self._trusted_until = float("-inf")
            return False
        now = _micro(self._wall())
        if verdict == "take":
            spec.holderIdentity = self.identity
            spec.acquireTime = now
            spec.leaseTransitions = (spec.leaseTransitions or 0) + (1 if record[0] else 0)
        spec.renewTime = now
        spec.leaseDurationSeconds = max(1, round(self.duration))
        lease.spec = spec
        try:
            # PUT with the resourceVersion just read: a 409 means another candidate won
            await self.client.replace(lease)
        except ApiError as exc:
            if exc.status.code != 409:
                raise
            self._trusted_until = float("-inf")
            self._observed = None
            return False
        self._held(started)
        return True

    async def _create(self, started: float) -> bool:
        now = _micro(self._wall())
        lease = Lease(
            metadata=ObjectMeta(name=self.name, namespace=self.namespace),
            spec=LeaseSpec(
                holderIdentity=self.identity,
                acquireTime=now,
                renewTime=now,
                leaseDurationSeconds=max(1, round(self.duration)),
                leaseTransitions=0,
            ),
        )
        try:
            await self.client.create(lease)
        except ApiError as exc:
            if exc.status.code != 409:
                raise
            return False  # another candidate created it first
        self._held(started)
        return True

    def _held(self, started: float) -> None:
        self.holder = self.identity
        self._observed = None
        self._trusted_until = started + self.duration / 2

    async def release(self) -> None:
        """Empty ``holderIdentity`` so a candidate takes over at once (graceful stop)."""
        if not self.trusted():
            return
        lease = await self.client.get(Lease, self.name, namespace=self.namespace)
        if lease.spec is None or lease.spec.holderIdentity != self.identity:
            return
        lease.spec.holderIdentity = None
        try:
            await self.client.replace(lease)
        except ApiError as exc:
            if exc.status.code != 409:
                raise
        self._trusted_until = float("-inf")
