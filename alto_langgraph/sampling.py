"""Which flagged items to label first, under a budget.

Kang et al. (MLSys 2020) choose what to label with a bandit over assertions (BAL): each
assertion is an arm; a round picks an arm by its reward so far, with exploration, and
labels an item that assertion flagged. Their reward is how much retraining on the label
reduced the assertion's firings. With no model to retrain here, the reward is the
label's own verdict: 1 when the flagged item was really wrong (a person corrected it),
0 for a false alarm. So labels go where assertions have been finding real errors.

``AssertionBandit`` does that with UCB1; ``uniform`` and ``least_confident`` are the
baselines it is compared with (``comparisons/squad_assertions.py``).
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Hashable, Iterable, Mapping
from typing import Any, TypeVar

Item = TypeVar("Item", bound=Hashable)


class AssertionBandit:
    """Pick flagged items to label, one at a time: ``pick()`` an item, label it, give
    ``reward(item, value)`` (1: a real error, 0: a false alarm), repeat.

    ``flagged`` maps each item to the assertions that flagged it. Each round takes the
    assertion with the highest upper confidence bound on its reward (UCB1: its mean
    reward plus ``sqrt(2 ln t / n)``; never-tried assertions first, in order) among
    those with unlabelled items left, and one of its unlabelled items at random
    (``seed``). An item's reward goes to the assertion that picked it."""

    def __init__(self, flagged: Mapping[Item, Iterable[str]], *, seed: int = 0) -> None:
        self._by_arm: dict[str, list[Any]] = {}
        for item, arms in flagged.items():
            for arm in arms:
                self._by_arm.setdefault(arm, []).append(item)
        if not self._by_arm:
            raise ValueError("AssertionBandit: no flagged items to choose from")
        self._random = random.Random(seed)
        self._labelled: set[Any] = set()
        self._pulls = dict.fromkeys(self._by_arm, 0)
        self._rewards = dict.fromkeys(self._by_arm, 0.0)
        self._picked: dict[Any, str] = {}

    def pick(self) -> Any | None:
        """The next item to label (None: every flagged item is labelled)."""
        live = [
            a for a, items in self._by_arm.items() if any(i not in self._labelled for i in items)
        ]
        if not live:
            return None
        total = sum(self._pulls.values())

        def bound(arm: str) -> float:
            n = self._pulls[arm]
            if n == 0:
                return math.inf
            return self._rewards[arm] / n + math.sqrt(2 * math.log(max(total, 1)) / n)

        arm = max(live, key=bound)  # ties: the first declared
        item = self._random.choice([i for i in self._by_arm[arm] if i not in self._labelled])
        self._labelled.add(item)
        self._picked[item] = arm
        return item

    def reward(self, item: Any, value: float) -> None:
        """What labelling ``item`` (from ``pick``) showed: 1 a real error, 0 a false alarm."""
        arm = self._picked.pop(item, None)
        if arm is None:
            raise KeyError(f"AssertionBandit: {item!r} was not picked, or was rewarded already")
        self._pulls[arm] += 1
        self._rewards[arm] += float(value)

    def observe(self, arm: str, value: float) -> None:
        """A label given before (not through ``pick``): it counts for assertion ``arm``."""
        if arm in self._pulls:
            self._pulls[arm] += 1
            self._rewards[arm] += float(value)

    def expected(self, item: Any) -> float:
        """The mean reward so far of the assertion that picked ``item`` (for a batch
        picked before any of it is labelled)."""
        arm = self._picked[item]
        n = self._pulls[arm]
        return self._rewards[arm] / n if n else 0.5

    def stats(self) -> dict[str, dict[str, float]]:
        """Per assertion: how often it was picked, and its mean reward."""
        return {
            a: {"picked": n, "mean_reward": self._rewards[a] / n if n else 0.0}
            for a, n in self._pulls.items()
        }


def bandit(
    flagged: Mapping[Item, Iterable[str]],
    budget: int,
    is_error: Callable[[Item], bool],
    *,
    seed: int = 0,
) -> list[Item]:
    """The items ``AssertionBandit`` labels within ``budget``, when labelling an item
    tells ``is_error(item)``."""
    chooser = AssertionBandit(flagged, seed=seed)
    chosen: list[Item] = []
    while len(chosen) < budget and (item := chooser.pick()) is not None:
        chooser.reward(item, 1.0 if is_error(item) else 0.0)
        chosen.append(item)
    return chosen


def uniform(items: Iterable[Item], budget: int, *, seed: int = 0) -> list[Item]:
    """``budget`` of ``items`` at random."""
    pool = sorted(set(items), key=repr)
    return random.Random(seed).sample(pool, min(budget, len(pool)))


def least_confident(confidence: Mapping[Item, float], budget: int) -> list[Item]:
    """The ``budget`` items the model was least sure of (uncertainty sampling)."""
    return sorted(confidence, key=lambda i: (confidence[i], repr(i)))[:budget]


def choose_flags(
    rows: list[dict[str, Any]], n: int, *, strategy: str = "bandit", seed: int = 0
) -> list[dict[str, Any]]:
    """``n`` of the unlabelled flag records in ``rows`` (``FlagStore.flags()``), to label
    next. ``bandit``: the labelled ones are its history (a label equal to the flagged
    output says the flag was a false alarm; any other label, a real error), and the
    batch is picked as if each pick paid its assertion's mean reward so far. ``uniform``:
    at random."""
    if strategy not in ("bandit", "uniform"):
        raise ValueError(f"strategy must be bandit or uniform, got {strategy!r}")
    todo = {r["id"]: r for r in rows if r.get("label") is None}
    if not todo or n <= 0:
        return []
    if strategy == "uniform":
        return [todo[i] for i in sorted(uniform(todo, n, seed=seed))]
    chooser = AssertionBandit({i: [r["assertion"]] for i, r in todo.items()}, seed=seed)
    for r in rows:
        if r.get("label") is not None:
            chooser.observe(r["assertion"], 0.0 if r["label"] == r["output"] else 1.0)
    chosen = []
    while len(chosen) < n and (item := chooser.pick()) is not None:
        chooser.reward(item, chooser.expected(item))
        chosen.append(todo[item])
    return chosen
