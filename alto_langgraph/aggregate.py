"""Aggregation operators: LangGraph reducers that are also incremental folds.

One object serves both ways:

* as a reducer in a state schema, ``Annotated[list, TopK(3, key=score)]``: LangGraph
  calls it with the current value and each write, in task-path order;
* as an aggregator over a stream, ``TopK(3, key=score).fold(over="hits", into="best")``:
  a ``@fold`` node that adds each chunk as it arrives and writes the aggregate as soon
  as the stream (its group) is complete. On stock LangGraph it is an ordinary node
  over the collected list, with the same result.

Write one by subclassing ``Aggregate``: ``start()`` gives the empty aggregate, ``add``
folds in one item (it may change a list aggregate in place and return it: the reducer
hands it a copy). The aggregate is the state value itself (a number, a list), so
reducing a write into the state and adding a chunk are the same operation.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from .streams import fold

__all__ = ["Aggregate", "Append", "Count", "Filter", "Sum", "TopK"]


class Aggregate:
    """An aggregation operator. Subclasses define ``start`` and ``add``."""

    def start(self) -> Any:
        raise NotImplementedError

    def add(self, acc: Any, item: Any) -> Any:
        raise NotImplementedError

    def items(self, update: Any) -> list[Any]:
        """The items one state write carries: a list's elements, or the value itself."""
        return update if isinstance(update, list) else [update]

    def __call__(self, current: Any, update: Any) -> Any:
        """As a LangGraph reducer: fold a write's items into (a copy of) the current value."""
        acc = self.start() if current is None else _copy(current)
        for item in self.items(update):
            acc = self.add(acc, item)
        return acc

    def fold(self, over: str, into: str) -> Callable[..., Any]:
        """A ``@fold`` node: the payload's ``over`` stream aggregated into state key ``into``."""
        if not isinstance(into, str) or not into:
            raise TypeError(f"{type(self).__name__}.fold(into=...) names a state key, got {into!r}")
        node = fold(over)(_AggregateFold(self, into))
        node.__name__ = node.__qualname__ = type(self).__name__
        return node

    def __repr__(self) -> str:
        fields = ", ".join(f"{k}={v!r}" for k, v in vars(self).items())
        return f"{type(self).__name__}({fields})"


class _AggregateFold:
    def __init__(self, op: Aggregate, into: str) -> None:
        self.op = op
        self.into = into

    def start(self, payload: Any) -> Any:
        return self.op.start()

    def step(self, acc: Any, chunk: Any) -> Any:
        return self.op.add(acc, chunk)

    def finish(self, acc: Any, payload: Any) -> dict[str, Any]:
        return {self.into: acc}


class Sum(Aggregate):
    """The sum of the items."""

    def start(self) -> Any:
        return 0

    def add(self, acc: Any, item: Any) -> Any:
        return acc + item


class Count(Aggregate):
    """How many items were written (a list write counts its elements)."""

    def start(self) -> int:
        return 0

    def add(self, acc: int, item: Any) -> int:
        return acc + 1


class Append(Aggregate):
    """Every item, in order (``operator.add`` that also takes single items)."""

    def start(self) -> list[Any]:
        return []

    def add(self, acc: list[Any], item: Any) -> list[Any]:
        acc.append(item)
        return acc


class Filter(Aggregate):
    """The items for which ``keep(item)`` is true, in order."""

    def __init__(self, keep: Callable[[Any], bool]) -> None:
        if not callable(keep):
            raise TypeError(f"Filter(keep) needs a predicate, got {keep!r}")
        self.keep = keep

    def start(self) -> list[Any]:
        return []

    def add(self, acc: list[Any], item: Any) -> list[Any]:
        if self.keep(item):
            acc.append(item)
        return acc


class TopK(Aggregate):
    """The ``k`` largest items by ``key``, largest first; ties keep arrival order."""

    def __init__(self, k: int, key: Callable[[Any], Any] | None = None) -> None:
        if not isinstance(k, int) or isinstance(k, bool) or k < 1:
            raise ValueError(f"TopK(k) needs a positive int, got {k!r}")
        self.k = k
        self.key = key

    def start(self) -> list[Any]:
        return []

    def add(self, acc: list[Any], item: Any) -> list[Any]:
        key = self.key or _identity
        rank = key(item)
        # after every item at least as large: stable, and O(k)
        at = next((i for i, x in enumerate(acc) if key(x) < rank), len(acc))
        if at < self.k:
            acc.insert(at, item)
            del acc[self.k :]
        return acc


def _identity(x: Any) -> Any:
    return x


def _copy(value: Any) -> Any:
    """What LangGraph holds is never changed in place."""
    return list(value) if isinstance(value, list) else value
