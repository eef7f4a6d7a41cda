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
* ``PrefixCacheAware``: for LM stages, whose routing key is ``prompt_key(prompt)``:
  prompts that share a prefix go where that prefix was sent before (its KV cache is
  there), unless the instances' loads are out of balance (SGLang router's cache-aware
  policy; ``docs/research/lm-engines.md``).
"""

from __future__ import annotations

import bisect
import collections
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


#: bytes of one block's hash in a prompt key
BLOCK_HASH = 8


def prompt_key(prompt: str, block_chars: int = 32) -> bytes:
    """The routing key of a prompt: one chained hash per whole ``block_chars`` block
    of its text (a block's hash covers everything before it), so two prompts' keys
    share exactly the blocks of their common prefix."""
    data, out, chain = prompt.encode(), [], b""
    for start in range(0, len(data) - block_chars + 1, block_chars):
        chain = hashlib.blake2b(chain + data[start : start + block_chars], digest_size=8).digest()
        out.append(chain)
    return b"".join(out)


class PrefixCacheAware:
    """Cache-aware routing, after SGLang's router: the router remembers which prompt
    blocks it sent to each instance (least recently used forgotten beyond
    ``max_blocks``), an approximation of each instance's prefix cache.

    * Loads out of balance (most - least outstanding > ``balance_abs`` and most >
      ``balance_rel`` x least): the least loaded instance.
    * Else, if some instance holds more than ``cache_threshold`` of the prompt's
      blocks: the one holding most (ties: the least loaded).
    * Else: the instance holding fewest blocks, to spread the prefixes.
    """

    def __init__(
        self,
        cache_threshold: float = 0.3,
        balance_abs: int = 4,
        balance_rel: float = 1.5,
        max_blocks: int = 1 << 16,
    ) -> None:
        self.cache_threshold = cache_threshold
        self.balance_abs = balance_abs
        self.balance_rel = balance_rel
        self.max_blocks = max_blocks
        self._held: dict[bytes, collections.OrderedDict[bytes, None]] = {}
        self._least = LeastOutstanding()

    def pick(
        self, key: bytes, instances: Sequence[bytes], outstanding: Mapping[bytes, int]
    ) -> bytes:
        blocks = [key[i : i + BLOCK_HASH] for i in range(0, len(key), BLOCK_HASH)]
        loads = [outstanding.get(inst, 0) for inst in instances]
        most, least = max(loads), min(loads)
        if not blocks or (most - least > self.balance_abs and most > self.balance_rel * least):
            chosen = self._least.pick(key, instances, outstanding)
        else:
            held = [self._held.setdefault(inst, collections.OrderedDict()) for inst in instances]
            matched = [_leading(blocks, h) for h in held]
            best = max(matched)
            if best > self.cache_threshold * len(blocks):
                candidates = [i for i, m in enumerate(matched) if m == best]
            else:
                fewest = min(len(h) for h in held)
                candidates = [i for i, h in enumerate(held) if len(h) == fewest]
            chosen = instances[min(candidates, key=lambda i: loads[i])]
        self._remember(chosen, blocks)
        return chosen

    def _remember(self, inst: bytes, blocks: list[bytes]) -> None:
        held = self._held.setdefault(inst, collections.OrderedDict())
        for b in blocks:
            held[b] = None
            held.move_to_end(b)
        while len(held) > self.max_blocks:
            held.popitem(last=False)


def _leading(blocks: list[bytes], held: Mapping[bytes, None]) -> int:
    """How many of ``blocks``, from the first, ``held`` has."""
    n = 0
    for b in blocks:
        if b not in held:
            break
        n += 1
    return n


POLICIES = {
    "consistent_hash": ConsistentHash,
    "least_outstanding": LeastOutstanding,
    "round_robin": RoundRobin,
    "prefix_cache_aware": PrefixCacheAware,
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
