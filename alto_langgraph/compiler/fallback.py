"""Which graph features alto does not run yet, so that a run using them goes to stock
LangGraph: the one rule, read both by ``lower`` (what ``explain()`` shows) and at each
run (where a parent graph or the config may bring a checkpointer or a store).

Why each: a checkpointer, interrupts, a node cache and ``get_state`` need Pregel's
checkpoint per step, which run-ahead would have to keep speculative (not built yet);
a store, because nodes may talk through it from one step to the next, which run-ahead
would reorder; a step timeout, because a step whose Send targets ran ahead ends sooner.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from .._langgraph import CONF, CONFIG_KEY_RUNTIME, resolve_checkpointer


def fallbacks(
    graph: Any, config: Mapping[str, Any] | None = None, kwargs: Mapping[str, Any] | None = None
) -> list[str]:
    """The features that send a run of ``graph`` to stock LangGraph, first the one the
    warning names. With ``config`` (merged) and ``kwargs`` (of ``stream``): this run's,
    where a parent lends its checkpointer or store; without: what the compiled graph
    itself has (what ``explain()`` shows)."""
    kwargs = kwargs or {}
    if config is None:
        checkpointer = graph.checkpointer not in (None, False, True)  # True: a parent's
        store = graph.store
    else:
        checkpointer = resolve_checkpointer(graph, config) is not None
        # the store a run uses, as LangGraph picks it (a parent lends its own)
        conf = config.get(CONF, {})
        store = conf[CONFIG_KEY_RUNTIME].store if CONFIG_KEY_RUNTIME in conf else graph.store
    found = {
        "a checkpointer": checkpointer,
        "interrupt_before": bool(kwargs.get("interrupt_before") or graph.interrupt_before_nodes),
        "interrupt_after": bool(kwargs.get("interrupt_after") or graph.interrupt_after_nodes),
        "a node cache": graph.cache is not None,
        "step_timeout": graph.step_timeout is not None,
        "a store": store is not None,
    }
    return [feature for feature, used in found.items() if used]
