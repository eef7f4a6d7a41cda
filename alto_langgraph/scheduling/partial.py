"""Applying what a ``@streaming`` node yields to its task, as it is yielded.

A task of a streaming node gets a ``TaskSink`` under ``CONFIG_KEY_YIELD``. Each item
goes through the node's own state writer (LangGraph's mapping of an update or a
``Command`` to channel writes) into the task's writes, in yield order: the task ends
with the writes stock LangGraph would get from the node's list of Commands, so the
loop applies the same writes in the same order. What changes is what happens at once:

* a ``Send`` starts its task (run-ahead) before the node has finished;
* a partial update is emitted in ``stream_mode="updates"`` as ``{node: update}``, and
  the loop's own update for the whole task is dropped (``StreamedUpdates``); those of a
  task that ran ahead on a view of the state wait for its hand-over (``HeldUpdates``).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from langgraph.types import Command

from .._langgraph import CONF, CONFIG_KEY_SEND, TASKS
from ..streams import StreamRef


class StreamedUpdates:
    """The loop's stream, minus its ``updates`` chunks for streaming nodes (their
    partial updates went out as they were applied)."""

    def __init__(self, inner: Any, ns: tuple[str, ...], streaming: frozenset[str]) -> None:
        self.inner = inner
        self.modes = inner.modes
        self.ns = ns
        self.streaming = streaming

    def __call__(self, chunk: tuple[tuple[str, ...], str, Any]) -> None:
        ns, mode, value = chunk
        if (
            mode == "updates"
            and ns == self.ns
            and isinstance(value, dict)
            and len(value) == 1
            and next(iter(value)) in self.streaming
            and next(iter(value.values())) is not None  # no partials: stock's None chunk
        ):
            return
        self.inner(chunk)

    def partial(self, node: str, update: Any) -> None:
        if "updates" in self.modes:
            self.inner((self.ns, "updates", {node: update}))


class HeldUpdates:
    """Partial updates of a task that ran ahead on a view of the state: held until the
    loop adopts its result (then they go out, ``replay``), dropped if it missed."""

    def __init__(self) -> None:
        self.held: list[tuple[str, Any]] = []

    def partial(self, node: str, update: Any) -> None:
        self.held.append((node, update))

    def replay(self, out: StreamedUpdates | None) -> None:
        if out is not None:
            for node, update in self.held:
                out.partial(node, update)
        self.held.clear()


class TaskSink:
    """``CONFIG_KEY_YIELD`` of one task in the app process (a ``streams.Sink``)."""

    def __init__(
        self,
        task: Any,
        writer: Any,
        output_keys: Any,
        out: StreamedUpdates | HeldUpdates | None,
        folds: Mapping[str, str],
        sends_ready: Callable[[], None],
    ) -> None:
        self.task = task
        self.task_id = task.id
        self.writer = writer
        self.output_keys = output_keys
        self.out = out
        self.folds = folds
        self._sends_ready = sends_ready

    def apply(self, item: Command) -> None:
        config = self.task.config
        send = config[CONF][CONFIG_KEY_SEND]
        written: list[tuple[str, Any]] = []

        def capture(values: Any) -> None:
            written.extend(values)
            send(values)

        self.writer.invoke(item, {**config, CONF: {**config[CONF], CONFIG_KEY_SEND: capture}})
        if self.out is not None:
            update = _update_of(written, self.output_keys)
            if update is not None:
                self.out.partial(self.task.name, update)
        if any(chan == TASKS for chan, _ in written):
            self._sends_ready()

    def open_stream(self) -> StreamRef:
        return StreamRef()

    def stream_event(self, ref: StreamRef, event: str, value: Any) -> None:
        ref.event(event, value)

    async def astream_event(self, ref: StreamRef, event: str, value: Any) -> None:
        ref.event(event, value)


def _update_of(written: list[tuple[str, Any]], output_keys: Any) -> Any:
    """As LangGraph's ``updates`` chunk shows one write batch of a task."""
    if isinstance(output_keys, str):
        values = [v for chan, v in written if chan == output_keys]
        return values[-1] if values else None
    keys = frozenset(output_keys)
    update = {chan: v for chan, v in written if chan in keys}
    return update or None
