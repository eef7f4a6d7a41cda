"""Routing policies: which instance of a stage gets an item.

The router calls ``pick`` once per task message with the item's routing key and the
stage's live instances. A policy is a small class, so it can be swapped per stage
(``stages={"x": {"policy": MyPolicy()}}``); it runs inside the router process and must
be picklable (cloudpickle ships it there).

* ``ConsistentHash``: items with the same routing key (one aggregation group) always
  reach the same instance, and adding or removing an instance moves only the groups
  that hashed to it. The default for stateful stages (aggregation-aware routing).
* ``LeastOutstanding``: the instance with the fewest calls in flight (ties rotate).
  The default for stateless stages.
* ``RoundRobin``: blind rotation, for comparison.
"""

from __future__ import annotations

import bisect
import hashlib
from collections.abc import Mapping, Sequence
from typing import Protocol


class RoutingPolicy(Protocol):
    def pick(
        self, key: bytes, instances: Sequence[bytes], outstanding: Mapping[bytes, int]
    ) -> bytes:
        """The instance (one of ``instances``, never empty) for an item with routing key
        ``key`` (``b""`` when the item belongs to no aggregation group); ``outstanding``
        counts the calls each instance has in flight."""


class RoundRobin:
    def __init__(self) -> None:
        self._next = 0

    def pick(
        self, key: bytes, instances: Sequence[bytes], outstanding: Mapping[bytes, int]
    ) -> bytes:
        self._next = (self._next + 1) % len(instances)
        return instances[self._next]


class LeastOutstanding:
    def __init__(self) -> None:
        self._start = 0

    def pick(
        self, key: bytes, instances: Sequence[bytes], outstanding: Mapping[bytes, int]
    ) -> bytes:
        n = len(instances)
        self._start = (self._start + 1) % n  # equal loads: rotate, do not pile on the first
        best, best_load = instances[self._start], outstanding.get(instances[self._start], 0)
        for i in range(1, n):
            inst = instances[(self._start + i) % n]
            load = outstanding.get(inst, 0)
            if load < best_load:
                best, best_load = inst, load
        return best


def _hash(data: bytes) -> int:
    return int.from_bytes(hashlib.blake2b(data, digest_size=8).digest(), "big")


class ConsistentHash:
    """A hash ring with ``points`` virtual points per instance. Items without a key
    (not part of any group) are balanced by ``LeastOutstanding``."""

    def __init__(self, points: int = 64) -> None:
        self.points = points
        self._ring: list[tuple[int, bytes]] = []
        self._hashes: list[int] = []
        self._members: tuple[bytes, ...] = ()
        self._keyless = LeastOutstanding()

    def _rebuild(self, instances: Sequence[bytes]) -> None:
        self._members = tuple(instances)
        self._ring = sorted(
            (_hash(inst + b"/" + str(i).encode()), inst)
            for inst in instances
            for i in range(self.points)
        )
        self._hashes = [h for h, _ in self._ring]

    def pick(
        self, key: bytes, instances: Sequence[bytes], outstanding: Mapping[bytes, int]
    ) -> bytes:
        if not key:
            return self._keyless.pick(key, instances, outstanding)
        if tuple(instances) != self._members:
            self._rebuild(instances)
        i = bisect.bisect(self._hashes, _hash(key)) % len(self._ring)
        return self._ring[i][1]


POLICIES = {
    "consistent_hash": ConsistentHash,
    "least_outstanding": LeastOutstanding,
    "round_robin": RoundRobin,
}


def make_policy(spec: object, *, stateful: bool) -> RoutingPolicy:
    """A policy from a name in ``POLICIES``, an instance, or ``None`` (the default for
    the stage: consistent hashing when it is stateful, least outstanding otherwise)."""
    if spec is None:
        return ConsistentHash() if stateful else LeastOutstanding()
    if isinstance(spec, str):
        try:
            return POLICIES[spec]()
        except KeyError:
            raise ValueError(
                f"unknown routing policy {spec!r}: expected one of {', '.join(POLICIES)} "
                "or an object with a pick(key, instances, outstanding) method"
            ) from None
    if not callable(getattr(spec, "pick", None)):
        raise TypeError(f"routing policy {spec!r} has no pick(key, instances, outstanding) method")
    return spec  # type: ignore[return-value]
