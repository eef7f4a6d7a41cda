"""Branch-local progress: what one run knows of each logical step, so that a task
triggered by an edge can start before its step's siblings have finished.

LangGraph's rule for a pull task of step ``k``: it is created when one of its trigger
channels was updated in step ``k - 1``, and it reads the state as of the end of step
``k - 1`` (every write of that step applied, in task-path order). ``StepLog`` keeps, per
step, the loop's tasks (once the loop is there), the tasks and run-ahead twins that have
finished with their writes, and a snapshot of the state channels at the step's start.
From those it

* predicts the pull tasks a finished task's writes trigger (the same trigger rules:
  an edge's channel written, or a waiting edge's barrier complete);
* builds a task's input from the writes known so far (``view``), remembering which
  writes went into each channel's value (a ``Basis``);
* at hand-over, checks that every channel the task read received exactly those writes,
  in the loop's order (``valid``); otherwise the task runs again at its step (a miss).

Only channels that keep their value from one step to the next (``LastValue`` and
reducer channels) are read through views: the compiler keeps nodes that read others
at their step (``compiler/lower.py``).
"""

from __future__ import annotations

import dataclasses
import threading
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from langgraph.channels import BinaryOperatorAggregate, EphemeralValue, LastValue, NamedBarrierValue
from langgraph.errors import EmptyChannelError

from .._langgraph import PULL, task_path_str
from ..views import ReadLog, StateView
from .tasks import StateNotReady

try:  # LangGraph 1.2.24
    from langgraph.channels import DeltaChannel

    VALUE_CHANNELS: tuple[type, ...] = (LastValue, BinaryOperatorAggregate, DeltaChannel)
except ImportError:  # older
    VALUE_CHANNELS = (LastValue, BinaryOperatorAggregate)


@dataclasses.dataclass(frozen=True)
class PullNode:
    """What the runtime needs of a node whose pull tasks may run ahead."""

    name: str
    #: its input channels (state keys, narrowed by its input schema) and managed values
    channels: tuple[str, ...]
    triggers: tuple[str, ...]
    #: the schema LangGraph builds its input with (a pydantic model or a dataclass), or
    #: None for a dict
    schema: type | None
    #: the state channels its conditional edges may read (they run on the view too)
    branch_reads: tuple[str, ...] = ()


@dataclasses.dataclass(eq=False)
class Finished:
    """A finished task of one step: a loop task's, or a twin's, writes."""

    #: who: the loop task's id, or a twin (``RunAhead``)
    ident: Any
    #: ``task_path_str`` of its path: the loop applies a step's writes in this order
    path: str
    writes: Sequence[tuple[str, Any]]
    #: its node
    name: str


@dataclasses.dataclass(eq=False)
class Basis:
    """What a view is built from: the state at the start of step ``base`` (channel
    copies, never changed), and the finished tasks of each step since, in the loop's
    order. A channel's value is folded when first asked for (``channel``), and
    ``applied`` keeps who wrote what went into it, in order: what the hand-over checks."""

    base: int
    step: int
    start: Mapping[str, Any]
    records: list[list[Finished]]
    applied: dict[str, list[Any]] = dataclasses.field(default_factory=dict)
    _folded: dict[str, Any] = dataclasses.field(default_factory=dict)

    def channel(self, chan: str) -> Any:
        """The channel ``chan`` with the known writes applied (a copy); None if those
        writes conflict (the loop fails on them too, if they stand: a task reading it
        misses); KeyError if it is not a state channel."""
        if chan in self._folded:
            return self._folded[chan]
        channel = self.start[chan]
        who: list[Any] = []
        for done in self.records:
            writes = []
            for f in done:
                mine = [v for c, v in f.writes if c == chan]
                if mine:
                    who.append(f.ident)
                    writes.extend(mine)
            if writes:
                if channel is self.start[chan]:
                    channel = channel.copy()
                try:
                    channel.update(writes)
                except Exception:
                    channel = None
                    who = [_CONFLICT]
                    break
        if who:
            self.applied[chan] = who
        self._folded[chan] = channel
        return channel


class _Step:
    __slots__ = ("base", "finished", "loop_done", "running", "tasks")

    def __init__(self) -> None:
        #: the loop's tasks of the step, once the loop is there
        self.tasks: list[Any] | None = None
        #: finished tasks by key (a pull task's node name, or a push task's identity)
        self.finished: dict[Any, Finished] = {}
        #: how many of the loop's tasks have finished
        self.loop_done = 0
        #: the nodes of the loop's tasks not finished yet (kept as tasks finish: a
        #: fan-out of a thousand Sends asks after each one)
        self.running: Counter[str] = Counter()
        #: channel copies: the state at the start of the step
        self.base: dict[str, Any] | None = None


class StepLog:
    """Per-run bookkeeping of logical steps. Not thread-safe: the caller holds its lock."""

    def __init__(self, pulls: Mapping[str, PullNode], barriers: frozenset[str]) -> None:
        self.pulls = pulls
        #: trigger channels that are waiting edges' barriers; the others are edges
        self.barriers = barriers
        #: channel -> the nodes it triggers (among ``pulls``)
        self.triggers: dict[str, list[str]] = {}
        for node in pulls.values():
            for chan in node.triggers:
                self.triggers.setdefault(chan, []).append(node.name)
        self._snapshot_channels = sorted(
            {c for n in pulls.values() for c in (*n.channels, *n.triggers, *n.branch_reads)}
        )
        self._steps: dict[int, _Step] = {}
        #: loop task id -> the twin it adopted (its writes are the twin's)
        self.adopted: dict[str, Any] = {}

    def _at(self, step: int) -> _Step:
        rec = self._steps.get(step)
        if rec is None:
            rec = self._steps[step] = _Step()
        return rec

    # -- what the loop does ------------------------------------------------------------
    def enter(self, step: int, tasks: Iterable[Any]) -> None:
        """The loop is at ``step``, with ``tasks``. A task that has writes already is
        done: the loop restored them (a resumed run's saved writes, a cached result)."""
        rec = self._at(step)
        if rec.tasks is None:
            rec.tasks = list(tasks)
            rec.running = Counter(t.name for t in rec.tasks)
            rec.running.subtract(f.name for f in rec.finished.values())
            for t in rec.tasks:
                if t.writes:
                    key = (PULL, t.name) if t.path[0] == PULL else t.id
                    done = Finished(t.id, task_path_str(t.path), t.writes, t.name)
                    self.finish(step, key, done, loop_task=True)

    def prune(self, floor: int) -> None:
        """Forget the steps before ``floor``: no view reaches back to them any more."""
        for step in [s for s in self._steps if s < floor]:
            rec = self._steps.pop(step)
            for task in rec.tasks or ():
                self.adopted.pop(task.id, None)

    def entered(self, step: int) -> bool:
        rec = self._steps.get(step)
        return rec is not None and rec.tasks is not None

    def snapshot(self, step: int, channels: Mapping[str, Any]) -> None:
        """Keep the state at the start of ``step``: call only while the loop runs that
        step's tasks (it changes channels between steps only)."""
        rec = self._at(step)
        if rec.base is None:
            rec.base = {c: channels[c].copy() for c in self._snapshot_channels if c in channels}

    def finish(self, step: int, key: Any, done: Finished, *, loop_task: bool) -> None:
        rec = self._at(step)
        if key not in rec.finished:  # a twin, then the loop's task that adopts it
            rec.running[done.name] -= 1
        rec.finished[key] = done
        if loop_task:
            rec.loop_done += 1

    def forget(self, step: int, key: Any) -> None:
        """A twin whose result the loop will not use (a miss): its node runs again."""
        rec = self._steps.get(step)
        if rec is not None and (done := rec.finished.pop(key, None)) is not None:
            rec.running[done.name] += 1

    def _latest_snapshot(self, step: int) -> int | None:
        """The last step up to ``step`` whose starting state was snapshotted."""
        return max(
            (s for s, r in self._steps.items() if r.base is not None and s <= step), default=None
        )

    def behind(self, step: int) -> bool:
        """Whether some task of ``step`` has not finished yet (or the loop is not there
        yet): only then does starting its successors early gain anything."""
        rec = self._steps.get(step)
        return rec is None or rec.tasks is None or rec.loop_done < len(rec.tasks)

    def running(self, step: int) -> Counter[str]:
        """The nodes of the loop's tasks of ``step`` (and the steps since the last
        snapshot before it) that have not finished: what may still write."""
        base = self._latest_snapshot(step)
        out: Counter[str] = Counter()
        for s in range(step if base is None else base, step + 1):
            rec = self._steps.get(s)
            if rec is not None and rec.tasks is not None:
                out.update({n: k for n, k in rec.running.items() if k > 0})
        return out

    # -- prediction --------------------------------------------------------------------
    def candidates(self, wrote: Iterable[str]) -> list[str]:
        """The nodes a channel in ``wrote`` (what one task just wrote) may trigger."""
        return sorted({n for c in wrote for n in self.triggers.get(c, ())})

    def triggered(self, step: int, names: Iterable[str], wrote: frozenset[str]) -> list[str]:
        """Among ``names`` (``candidates`` of ``wrote``), the nodes whose pull task of step
        ``step + 1`` the writes known at ``step`` create."""
        out = []
        for name in names:
            for chan in self.pulls[name].triggers:
                if chan in wrote and self._fires(step, chan):
                    out.append(name)
                    break
        return out

    def _fires(self, step: int, chan: str) -> bool:
        if chan not in self.barriers:
            return True  # an edge, written: triggered
        # a waiting edge: triggered once all its sources have written, counting those of
        # earlier steps (known from the snapshot of this step's start)
        rec = self._steps[step]
        if rec.base is None or chan not in rec.base:
            return False
        writes = [v for f in _ordered(rec.finished.values()) for c, v in f.writes if c == chan]
        channel = rec.base[chan].copy()
        try:
            channel.update(writes)
        except Exception:
            return False
        return channel.is_available()

    # -- views -------------------------------------------------------------------------
    def view(
        self, node: PullNode, step: int, managed: Callable[[str], Any]
    ) -> tuple[dict[str, Any], Basis] | None:
        """The input values of ``node``'s pull task of ``step`` from the writes known so
        far, and what they were built from; None if there is no snapshot to build on.
        ``managed(chan)``: a managed value's value for the task."""
        base_step = self._latest_snapshot(step - 1)
        if base_step is None:
            return None
        base = self._steps[base_step].base
        assert base is not None
        per_step = []
        for s in range(base_step, step):
            done = self._records(s)
            if done is None:
                return None
            per_step.append(done)
        basis = Basis(base_step, step, base, per_step)
        values: dict[str, Any] = {}
        for chan in node.channels:
            if chan not in base:
                values[chan] = managed(chan)
                continue
            channel = basis.channel(chan)
            if channel is not None and channel.is_available():
                values[chan] = channel.get()
        return values, basis

    def _records(self, step: int) -> list[Finished] | None:
        """The finished tasks of ``step`` in the loop's order: all of its tasks once the
        loop has moved past it, else those known to have finished."""
        rec = self._steps.get(step)
        nxt = self._steps.get(step + 1)
        if nxt is not None and nxt.tasks is not None:
            if rec is None or rec.tasks is None:
                return None  # a step alto did not see: nothing to build on
            return [
                Finished(self._idents(t), task_path_str(t.path), t.writes, t.name)
                for t in rec.tasks
            ]
        return _ordered(rec.finished.values()) if rec is not None else []

    def _idents(self, task: Any) -> Any:
        twin = self.adopted.get(task.id)
        return task.id if twin is None else (task.id, twin)

    # -- validation --------------------------------------------------------------------
    def valid(self, basis: Basis, read: Iterable[str]) -> bool:
        """Whether every channel in ``read`` holds, at the start of ``basis.step``, the
        value the view gave: the same writes, in the same order (managed values, known
        from the task's step, are not checked). Call once the loop is at ``basis.step``."""
        steps = []
        for s in range(basis.base, basis.step):
            rec = self._steps.get(s)
            if rec is None or rec.tasks is None:
                return False
            steps.append(sorted(rec.tasks, key=lambda t: task_path_str(t.path)))
        for chan in read:
            if chan not in basis.start:
                continue
            expected = basis.applied.get(chan, ())
            actual = [t for tasks in steps for t in tasks if any(c == chan for c, _ in t.writes)]
            if len(actual) != len(expected):
                return False
            for task, who in zip(actual, expected, strict=True):
                if not _same(who, task.id, self.adopted.get(task.id)):
                    return False
        return True


class BranchReader:
    """``CONFIG_KEY_READ`` of a pull task that runs ahead, for its conditional edges: as
    LangGraph's reader, the state plus (``fresh``) the task's own writes, but read from
    its view, and what they read counts as the task's reads."""

    def __init__(
        self,
        basis: Basis,
        writes: Sequence[tuple[str, Any]],
        log: ReadLog,
        managed: Callable[[str], Any],
    ) -> None:
        self.basis = basis
        self.writes = writes
        self.log = log
        self.managed = managed

    def __call__(self, select: str | Sequence[str], fresh: bool = False) -> Any:
        if isinstance(select, str):
            self.log.read(select)
            value = self._value(select, fresh)
            if value is _EMPTY:
                raise EmptyChannelError(select)
            return value
        values: dict[str, Any] = {}
        for chan in select:
            value = self._value(chan, fresh)
            if value is not _EMPTY:
                values[chan] = value
        return StateView(values, self.log)

    def _value(self, chan: str, fresh: bool) -> Any:
        if chan not in self.basis.start:
            return self.managed(chan)
        channel = self.basis.channel(chan)
        if channel is None:  # conflicting writes: the task misses
            raise StateNotReady(f"alto: writes to {chan!r} conflict")
        own = [v for c, v in self.writes if c == chan] if fresh else []
        if own:
            channel = channel.copy()
            channel.update(own)
        return channel.get() if channel.is_available() else _EMPTY


_EMPTY = object()

#: trigger channels whose pull tasks may run ahead: an edge's (written: triggered), a
#: waiting edge's (triggered once every source has written); a deferred node's wait
TRIGGER_CHANNELS = (EphemeralValue, NamedBarrierValue)

#: in ``Basis.applied``: the channel's writes conflicted in the view
_CONFLICT = object()


def _same(who: Any, task_id: str, twin: Any) -> bool:
    if isinstance(who, tuple):  # a loop task known by (id, twin)
        return who[0] == task_id
    return who == task_id or (twin is not None and who is twin)


def _ordered(done: Iterable[Finished]) -> list[Finished]:
    return sorted(done, key=lambda f: f.path)


#: consecutive misses after which a node's edge-triggered tasks stop running ahead
MISS_LIMIT = 3
#: a task still running that is expected to take less than this (seconds) is not worth
#: running ahead of: starting a task early costs about a third of a millisecond here
WORTH_WAITING_FOR = 0.002


class RunAheadStats:
    """Run-ahead of one app's nodes, across its runs: how many tasks ran ahead, were
    adopted, missed (ran again at their step), were dropped (their step never came: the
    request failed or took another way), were held (not started: a task still running
    writes what the node read before) or skipped (not started: what still runs is
    quick, so starting early would gain nothing).

    What it learns, to avoid misses it can foresee: the state keys each node reads (from
    its tasks that ran ahead, and from its first run at its step), and the channels each
    node's tasks write. A node is held at its step while a task of a node known to
    write what it reads (until it has been seen: any key of its input) is still
    running: a fan-in that reads the list its fan-out appends to waits. A node that
    still misses ``MISS_LIMIT`` times in a row stops running ahead for the app's
    lifetime."""

    COUNTS = ("run_ahead", "adopted", "missed", "dropped", "held", "skipped")

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counts: dict[str, dict[str, int]] = {}
        self._in_a_row: dict[str, int] = {}
        self.stopped: set[str] = set()
        self.reads: dict[str, frozenset[str]] = {}
        self.writes: dict[str, frozenset[str]] = {}
        #: each node's typical run time (seconds, a moving average)
        self.times: dict[str, float] = {}

    def took(self, node: str, seconds: float) -> None:
        """A task of ``node`` ran for ``seconds``."""
        before = self.times.get(node)
        self.times[node] = seconds if before is None else 0.7 * before + 0.3 * seconds

    def worth_waiting_for(self, running: Iterable[str]) -> bool:
        """Whether a task of the ``running`` nodes is expected to take long enough that
        starting its siblings' successors now gains something (unknown ones may; none
        running: the loop is about to get there)."""
        times = self.times
        return any(times.get(n, WORTH_WAITING_FOR) >= WORTH_WAITING_FOR for n in running)

    def read(self, node: str, channels: Iterable[str]) -> None:
        """What a task of ``node`` read (one that ran ahead, or its first at its step)."""
        new = frozenset(channels)
        known = self.reads.get(node)
        if known is None or not new <= known:
            with self._lock:
                self.reads[node] = self.reads.get(node, frozenset()) | new

    def wrote(self, node: str, new: frozenset[str]) -> None:
        """The channels a task of ``node`` wrote."""
        if not new <= self.writes.get(node, frozenset()):
            with self._lock:
                self.writes[node] = self.writes.get(node, frozenset()) | new

    def would_miss(self, node: str, running: Iterable[str], declared: Iterable[str]) -> bool:
        """Whether ``node`` reads a channel that one of the ``running`` nodes writes:
        what it read before, or (never seen yet) every channel it declares it reads."""
        reads = self.reads.get(node)
        if reads is None:
            reads = frozenset(declared)
        if not reads:
            return False
        return any(not reads.isdisjoint(self.writes.get(n, ())) for n in running)

    def add(self, node: str, what: str, n: int = 1) -> None:
        with self._lock:
            counts = self._counts.setdefault(node, dict.fromkeys(self.COUNTS, 0))
            counts[what] += n
            if what == "missed":
                self._in_a_row[node] = misses = self._in_a_row.get(node, 0) + n
                if misses >= MISS_LIMIT:
                    self.stopped.add(node)
            elif what == "adopted":
                self._in_a_row[node] = 0

    def stop(self, node: str) -> None:
        """``node`` stops running ahead: its tasks would miss each time (they start
        graphs that keep memory, or that interrupt)."""
        with self._lock:
            self.stopped.add(node)

    def snapshot(self) -> dict[str, dict[str, Any]]:
        with self._lock:
            return {
                node: {**counts, "stopped": node in self.stopped}
                for node, counts in sorted(self._counts.items())
            }
