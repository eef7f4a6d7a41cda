"""``AltoCompiledStateGraph``: a LangGraph ``CompiledStateGraph`` that runs on alto.

It is the compiled graph LangGraph would build, with only ``stream``/``astream``
replaced (``invoke``, ``ainvoke``, ``batch`` and ``abatch`` go through them), so
``isinstance`` checks, ``get_graph()``, schemas and ``with_config`` keep working.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import AsyncIterator, Iterator
from contextlib import aclosing
from typing import Any

from langchain_core.runnables import RunnableConfig
from langgraph.graph.state import CompiledStateGraph

from .compiler import Plan, lower
from .options import AltoOptions
from .runtime._pregel import CONF, CONFIG_KEY_RUNNER_SUBMIT, CONFIG_KEY_RUNTIME, ensure_config
from .runtime.coordinator import (
    AsyncRequestRun,
    RequestRun,
    SyncRequestRun,
    run_ahead_aware,
)
from .runtime.executor import Executor, make_executor
from .runtime.messages import CONFIG_KEY_ANCESTRY
from .runtime.tasks import NodeRunner, new_id, node_runners

logger = logging.getLogger("alto_langgraph")


class AltoFallbackWarning(UserWarning):
    """A run used a feature alto does not run yet, so stock LangGraph ran it instead."""


class _AltoState:
    """What alto keeps beside the compiled graph; built once, shared by copies."""

    def __init__(self, graph: CompiledStateGraph, options: AltoOptions) -> None:
        self.options = options
        self.executor: Executor = make_executor(options.executor)
        # from the nodes as LangGraph built them: run-ahead tasks run these procs
        self.runners: dict[str, NodeRunner] = node_runners(graph.nodes)
        self.plan: Plan = lower(graph, options)


class AltoCompiledStateGraph(CompiledStateGraph):
    """A compiled ``StateGraph`` whose runs are scheduled by alto. Build it with
    ``builder.compile(backend="alto")`` or ``alto_langgraph.compile(graph)``."""

    _alto: _AltoState

    # -- construction ------------------------------------------------------------
    @classmethod
    def _adopt(cls, graph: CompiledStateGraph, options: AltoOptions) -> AltoCompiledStateGraph:
        """Turn a freshly compiled stock graph (owned by the caller) into an alto graph."""
        _alto_subgraphs(graph, options)
        graph.__class__ = cls
        graph._alto = _AltoState(graph, options)
        # the loop's tasks: procs that adopt a run-ahead result when run inline
        for name, node in list(graph.nodes.items()):
            graph.nodes[name] = run_ahead_aware(node)
        return graph  # type: ignore[return-value]

    def copy(self, update: dict[str, Any] | None = None) -> AltoCompiledStateGraph:
        # As Pregel.copy (which rebuilds through __init__ from __dict__), minus _alto,
        # which __init__ must not see; self is not touched: other threads may be using
        # it (with_config per request is common).
        attrs = {k: v for k, v in self.__dict__.items() if k not in ("__orig_class__", "_alto")}
        attrs.update(update or {})
        new = self.__class__(**attrs)
        new._alto = self._alto
        return new

    # -- introspection -----------------------------------------------------------
    @property
    def plan(self) -> Plan:
        """The lowered dataflow plan (see ``explain``)."""
        return self._alto.plan

    def explain(self, file: Any = None) -> Plan:
        """Print the lowered dataflow plan and return it."""
        print(self._alto.plan, file=file)
        return self._alto.plan

    # -- execution ---------------------------------------------------------------
    def _fallback_reason(self, merged: RunnableConfig, kwargs: dict[str, Any]) -> str | None:
        if self._resolve_checkpointer(merged) is not None:
            return "a checkpointer"
        if kwargs.get("interrupt_before") or self.interrupt_before_nodes:
            return "interrupt_before"
        if kwargs.get("interrupt_after") or self.interrupt_after_nodes:
            return "interrupt_after"
        if self.cache is not None:
            return "a node cache"
        if self.step_timeout is not None:
            # a step whose Send targets ran ahead ends sooner: a different answer
            return "step_timeout"
        # the store a run uses, as LangGraph picks it (a parent lends its own)
        conf = merged.get(CONF, {})
        store = conf[CONFIG_KEY_RUNTIME].store if CONFIG_KEY_RUNTIME in conf else self.store
        if store is not None:
            # nodes may talk through the store across steps; run-ahead would reorder it
            return "a store"
        return None

    def _warn_fallback(self, reason: str) -> None:
        msg = (
            f"alto: graph {self.get_name()!r} runs on stock LangGraph because it uses "
            f"{reason}, which the alto backend does not run yet"
        )
        logger.warning(msg)
        warnings.warn(msg, AltoFallbackWarning, stacklevel=3)

    async def astream(
        self, input: Any, config: RunnableConfig | None = None, **kwargs: Any
    ) -> AsyncIterator[Any]:
        merged = ensure_config(self.config, config)
        reason = self._fallback_reason(merged, kwargs)
        if reason is not None:
            self._warn_fallback(reason)
            async with aclosing(super().astream(input, config, **kwargs)) as stream:
                async for chunk in stream:
                    yield chunk
            return
        run = AsyncRequestRun(
            max_concurrency=merged.get("max_concurrency"), **self._run_args(merged)
        )
        stream = super().astream(input, _with_hook(config, run), **kwargs)
        try:
            async for chunk in stream:
                yield chunk
        finally:
            # When the caller stops early: cancel this run's tasks first (LangGraph's
            # loop waits for the tasks it submitted), then let the loop exit now rather
            # than whenever the generator is collected.
            await run.aclose()
            await stream.aclose()

    def stream(
        self, input: Any, config: RunnableConfig | None = None, **kwargs: Any
    ) -> Iterator[Any]:
        merged = ensure_config(self.config, config)
        reason = self._fallback_reason(merged, kwargs)
        if reason is not None:
            self._warn_fallback(reason)
            yield from super().stream(input, config, **kwargs)
            return
        run = SyncRequestRun(config=merged, **self._run_args(merged))
        try:
            yield from super().stream(input, _with_hook(config, run), **kwargs)
        finally:
            run.close()

    def _run_args(self, merged: RunnableConfig) -> dict[str, Any]:
        return {
            "request_id": str(merged.get("run_id") or new_id()),
            # run inside a node of an alto graph: a nested scope of that task's item
            "root": merged.get(CONF, {}).get(CONFIG_KEY_ANCESTRY, ()),
            "runners": self._alto.runners,
            "retry_policy": self.retry_policy,
            "executor": self._alto.executor,
        }


def _with_hook(config: RunnableConfig | None, run: RequestRun) -> RunnableConfig:
    """``config`` with ``run`` installed as LangGraph's runner-submit hook."""
    config = dict(config or {})
    config[CONF] = {**config.get(CONF, {}), CONFIG_KEY_RUNNER_SUBMIT: run}
    return config  # type: ignore[return-value]


def _alto_subgraphs(graph: CompiledStateGraph, options: AltoOptions) -> None:
    """Subgraph nodes run on alto too: each gets an alto copy (the user's object is untouched)."""
    for name, node in list(graph.nodes.items()):
        sub = node.bound
        if isinstance(sub, CompiledStateGraph) and not isinstance(sub, AltoCompiledStateGraph):
            alto_sub = AltoCompiledStateGraph._adopt(sub.copy({"nodes": dict(sub.nodes)}), options)
            graph.nodes[name] = node.copy({"bound": alto_sub, "subgraphs": [alto_sub]})
