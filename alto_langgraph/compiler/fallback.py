"""What a run's features change, read both by ``lower`` (what ``explain()`` shows) and at
each run (where the call, a parent graph or the config may bring a checkpointer, a
store or interrupts):

* ``fallbacks``: the features alto does not run faithfully yet, so that a run using
  them goes to stock LangGraph: a checkpointer, when a node in worker processes
  invokes a graph itself: that graph would keep no memory there (its checkpoints
  belong in the app's checkpointer). (``runtime.store`` in worker processes relays
  each operation to the run's store: ``process/relay.py``.)
* ``held_at_step``: the features under which every task waits for its superstep
  (no run-ahead), the run staying on alto. ``interrupt_before``/``interrupt_after``:
  a step stock never starts before the human answers must not start early either; a
  store: nodes may talk through it from one step to the next, which run-ahead would
  reorder; ``step_timeout``: it times a step, and a step whose tasks ran ahead ends
  sooner.

A checkpointer, ``interrupt()`` and the state API need neither: LangGraph's own loop
writes the checkpoints, and work that ran ahead reaches it only when it is adopted at
its step (``scheduling/coordinator.py``).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from .._langgraph import CONF, CONFIG_KEY_RUNTIME, resolve_checkpointer


def _store(graph: Any, config: Mapping[str, Any] | None) -> Any:
    """The store a run uses, as LangGraph picks it (a parent lends its own)."""
    if config is None:
        return graph.store
    conf = config.get(CONF, {})
    return conf[CONFIG_KEY_RUNTIME].store if CONFIG_KEY_RUNTIME in conf else graph.store


def fallbacks(
    graph: Any, workers: frozenset[str], config: Mapping[str, Any] | None = None
) -> list[str]:
    """The features that send a run of ``graph`` to stock LangGraph, first the one the
    warning names; ``workers``: the nodes of the graph that run in worker processes.
    With ``config`` (merged): this run's; without: what the compiled graph has."""
    if not any(graph.nodes[n].subgraphs for n in workers):
        return []
    if config is None:
        checkpointer = graph.checkpointer not in (None, False, True)  # True: a parent's
    else:
        checkpointer = resolve_checkpointer(graph, config) is not None
    if checkpointer:
        return ["a checkpointer with a node in worker processes that invokes a graph"]
    return []


def held_at_step(
    graph: Any, config: Mapping[str, Any] | None = None, kwargs: Mapping[str, Any] | None = None
) -> list[str]:
    """The features that keep every task of a run of ``graph`` at its superstep. With
    ``config`` and ``kwargs`` (of ``stream``): this run's; without: the graph's own."""
    kwargs = kwargs or {}
    found = {
        "interrupt_before": bool(kwargs.get("interrupt_before") or graph.interrupt_before_nodes),
        "interrupt_after": bool(kwargs.get("interrupt_after") or graph.interrupt_after_nodes),
        "a store": _store(graph, config) is not None,
        "step_timeout": graph.step_timeout is not None,
    }
    return [feature for feature, used in found.items() if used]
