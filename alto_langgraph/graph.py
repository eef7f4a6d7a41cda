"""``AltoCompiledStateGraph``: a LangGraph ``CompiledStateGraph`` that runs on alto.

It is the compiled graph LangGraph would build, with only ``stream``/``astream``
replaced (``invoke``, ``ainvoke``, ``batch`` and ``abatch`` go through them), so
``isinstance`` checks, ``get_graph()``, schemas and ``with_config`` keep working.
"""

from __future__ import annotations

import asyncio
import logging
import sys
import threading
import warnings
from collections.abc import AsyncIterator, Iterator
from contextlib import aclosing
from typing import Any

from langchain_core.runnables import RunnableConfig
from langgraph.channels import NamedBarrierValue
from langgraph.graph.state import CompiledStateGraph

from ._langgraph import (
    CONF,
    CONFIG_KEY_RUNNER_SUBMIT,
    ensure_config,
    input_schema_of,
    resolve_checkpointer,
)
from .assertions import is_asserted
from .compiler import Plan, lower, passes
from .compiler.fallback import fallbacks, held_at_step
from .config_keys import (
    CONFIG_KEY_ANCESTRY,
    CONFIG_KEY_IN_PROCESS,
    CONFIG_KEY_LM,
    CONFIG_KEY_REQUEST,
)
from .errors import AltoFallbackWarning
from .options import AltoOptions
from .process import worker
from .process.deployment import Deployment
from .process.remote import RemoteNode
from .scheduling.coordinator import AsyncRequestRun, RequestRun, SyncRequestRun
from .scheduling.progress import VALUE_CHANNELS, PullNode, RunAheadStats
from .scheduling.tasks import NodeRunner, new_id, node_runners
from .streams import is_fold, is_streaming, node_function

logger = logging.getLogger("alto_langgraph")

__all__ = ["AltoCompiledStateGraph", "AltoFallbackWarning"]


class _AltoState:
    """What alto keeps beside a compiled graph: its plan, the deployment running the
    plan's process stages (None if it has none; a graph and its subgraphs share one),
    and the node runners run-ahead tasks use. Built once, shared by copies."""

    def __init__(
        self,
        plan: Plan,
        deployment: Deployment | None,
        runners: dict[str, NodeRunner],
        barriers: frozenset[str],
        state_channels: tuple[str, ...],
        with_memory: frozenset[str] = frozenset(),
    ) -> None:
        self.plan = plan
        self.deployment = deployment
        # from the nodes as alto rebuilt them: run-ahead tasks run these procs
        self.runners = runners
        self.streaming, self.folds = _streaming_nodes(runners)
        self.at_step = frozenset(s.name for s in plan.stages if s.reads_state)
        self.never_ahead = frozenset(s.name for s in plan.stages if not s.run_ahead or s.cached)
        # nodes whose edge-triggered tasks may run ahead, and the waiting edges' channels
        self.pulls = {
            s.name: _pull_node(s.name, runners[s.name], state_channels)
            for s in plan.stages
            if s.kind in ("node", "subgraph")
            and s.name not in self.never_ahead
            and not s.pull_waits
        }
        #: nodes that run graphs keeping memory in the run's checkpointer (subgraphs):
        #: with one, they run at their step (their checkpoints name the loop's task)
        self.with_memory = with_memory
        #: nodes in worker processes: a run's store and checkpointer do not reach them
        self.workers = plan.worker_nodes()
        #: the fallback features already warned of (once per app and feature)
        self.warned: set[str] = set()
        self.warned_lock = threading.Lock()
        self.barriers = barriers
        self.state_channels = state_channels
        self.ahead_stats = RunAheadStats()

    def lm_config(self) -> dict[str, Any]:
        """The configurable entry that sends a run's ``ChatAlto`` calls to this app's LM
        stages (none: they run where they are made, or where the caller's run sends them)."""
        deployment = self.deployment
        if deployment is None or not deployment.lm_routes:
            return {}
        from .lm.client import LMRoutes  # only apps that serve models import lm/

        return {CONFIG_KEY_LM: LMRoutes(deployment, deployment.lm_routes)}

    def __reduce__(self) -> Any:
        # pickled with node code (a graph invoked inside a node): there it runs inline
        return (
            _AltoState,
            (self.plan, None, self.runners, self.barriers, self.state_channels, self.with_memory),
        )


def _pull_node(name: str, runner: NodeRunner, state_channels: tuple[str, ...]) -> PullNode:
    node = runner.node
    return PullNode(
        name,
        tuple(node.channels),
        tuple(node.triggers),
        input_schema_of(node) or None,
        # conditional edges read state keys: on a view, when every one folds
        state_channels if runner.late else (),
    )


def _state_channels(graph: CompiledStateGraph) -> tuple[str, ...]:
    """The graph's state channels, if each keeps its value from step to step (what a
    view can fold); () if one does not."""
    keys = [k for k in graph.builder.channels if k in graph.channels]
    if all(type(graph.channels[k]) in VALUE_CHANNELS for k in keys):
        return tuple(keys)
    return ()


def _drawn(bound: Any) -> Any:
    """The node's own runnable, without the assertions and the ``RemoteNode`` around it."""
    if is_asserted(bound):
        bound = bound.inner
    return bound.node if isinstance(bound, RemoteNode) else bound


def _streaming_nodes(runners: dict[str, NodeRunner]) -> tuple[frozenset[str], dict[str, str]]:
    """The graph's ``@streaming`` nodes, and its ``@fold`` nodes with their stream field."""
    fns = {name: node_function(r.node.bound) for name, r in runners.items()}
    return (
        frozenset(n for n, fn in fns.items() if is_streaming(fn)),
        {n: fn.__alto_fold__ for n, fn in fns.items() if is_fold(fn)},
    )


class AltoCompiledStateGraph(CompiledStateGraph):
    """A compiled ``StateGraph`` whose runs are scheduled by alto. Build it with
    ``builder.compile(backend="alto")`` or ``alto_langgraph.compile(graph)``."""

    _alto: _AltoState

    # -- construction ------------------------------------------------------------
    @classmethod
    def _adopt(cls, graph: CompiledStateGraph, options: AltoOptions) -> AltoCompiledStateGraph:
        """Turn a freshly compiled stock graph (owned by the caller) into an alto graph:
        lower it to a plan, then carry the plan out (``compiler/passes.py``)."""
        plan = lower(graph, options, in_instance=worker.IN_STAGE_INSTANCE)
        options.check_stage_names(
            [s.qualname for s in plan.all_stages() if s.kind in ("node", "lm")]
        )
        deployment = passes.deploy(plan)
        app = cls._rewrite(graph, plan, deployment)
        if deployment is not None and options.start == "compile":
            deployment.start()
        return app

    @classmethod
    def _rewrite(
        cls, graph: CompiledStateGraph, plan: Plan, deployment: Deployment | None
    ) -> AltoCompiledStateGraph:
        passes.adopt_subgraphs(graph, plan, lambda sub, sp: cls._rewrite(sub, sp, deployment))
        passes.place_stages(graph, plan, deployment)
        runners = node_runners(graph.nodes)
        passes.run_ahead_aware(graph)
        graph.__class__ = cls
        barriers = frozenset(
            name for name, ch in graph.channels.items() if type(ch) is NamedBarrierValue
        )
        with_memory = frozenset(
            name
            for name, node in graph.nodes.items()
            if any(getattr(sub, "checkpointer", None) is not False for sub in node.subgraphs or ())
        )
        graph._alto = alto = _AltoState(
            plan, deployment, runners, barriers, _state_channels(graph), with_memory
        )
        if alto.streaming:
            # the loop hands out stream chunks while tasks run, not only between steps:
            # partial updates are worth seeing as they come
            graph.stream_eager = True
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

    # -- lifecycle ---------------------------------------------------------------
    @property
    def deployment(self) -> Deployment | None:
        """The router and stage instances running this app's process stages (None if
        every stage runs in the app process): their ``specs``, ``pids`` and router
        ``stats()``."""
        return self._alto.deployment

    def close(self) -> None:
        """Stop this app's worker processes (also on leaving ``with``/``async with``,
        and at interpreter exit). Calls still in flight fail; the app cannot run again."""
        if self._alto.deployment is not None:
            self._alto.deployment.close()

    def __enter__(self) -> AltoCompiledStateGraph:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    async def __aenter__(self) -> AltoCompiledStateGraph:
        return self

    async def __aexit__(self, *exc: Any) -> None:
        self.close()

    # -- introspection -----------------------------------------------------------
    def get_graph(self, config: RunnableConfig | None = None, *, xray: int | bool = False) -> Any:
        # drawn from the nodes' own runnables, not the RemoteNodes standing in for them
        return CompiledStateGraph.get_graph(self._as_drawn(), config, xray=xray)

    async def aget_graph(
        self, config: RunnableConfig | None = None, *, xray: int | bool = False
    ) -> Any:
        return await CompiledStateGraph.aget_graph(self._as_drawn(), config, xray=xray)

    def _as_drawn(self) -> CompiledStateGraph:
        nodes = {
            name: node.copy({"bound": _drawn(node.bound)}) for name, node in self.nodes.items()
        }
        attrs = {k: v for k, v in self.__dict__.items() if k not in ("__orig_class__", "_alto")}
        return CompiledStateGraph(**{**attrs, "nodes": nodes})

    @property
    def plan(self) -> Plan:
        """The lowered dataflow plan (see ``explain``)."""
        return self._alto.plan

    def run_ahead_stats(self) -> dict[str, dict[str, Any]]:
        """Per node (a subgraph's as ``"subgraph_node/node"``), across this app's runs:
        tasks that ran ahead of their superstep (``run_ahead``), whose result the loop
        took (``adopted``), that ran again at their step because a state key they read
        received a write they did not see (``missed``: the node ran twice, as on a
        retry), whose step never came (``dropped``), or that were not started because
        a task still running writes what the node reads (``held``) or is quick
        (``skipped``); ``stopped``: the node missed too often in a row and no longer
        runs ahead."""
        out = dict(self._alto.ahead_stats.snapshot())
        for name, node in self.nodes.items():
            sub = node.bound
            if isinstance(sub, AltoCompiledStateGraph) and sub is not self:
                out.update({f"{name}/{k}": v for k, v in sub.run_ahead_stats().items()})
        return out

    def explain(self, file: Any = None) -> Plan:
        """Print the lowered dataflow plan and return it."""
        print(self._alto.plan, file=file)
        return self._alto.plan

    # -- execution ---------------------------------------------------------------
    def _fallback_reason(self, merged: RunnableConfig) -> str | None:
        reasons = fallbacks(self, self._alto.workers, merged)
        if not reasons:
            return None
        logger.debug("alto: a run of %r goes to stock LangGraph: %s", self.get_name(), reasons[0])
        return reasons[0]

    def _warn_fallback(self, reason: str) -> None:
        """Warn once per app and feature, naming the user's call site."""
        alto = self._alto
        with alto.warned_lock:
            if reason in alto.warned:
                return
            alto.warned.add(reason)
        msg = (
            f"alto: graph {self.get_name()!r} runs on stock LangGraph because it uses "
            f"{reason}, which the alto backend does not run yet"
        )
        warnings.warn(msg, AltoFallbackWarning, stacklevel=_user_stacklevel())

    def _refused_by_stock(self, merged: RunnableConfig) -> bool:
        """LangGraph refuses a run with a checkpointer and no ``configurable`` (it needs
        a thread id): it checks the caller's config, in which alto's keys would hide
        that, so such a run goes to stock LangGraph to be refused there."""
        return not merged.get(CONF) and resolve_checkpointer(self, merged) is not None

    async def astream(
        self, input: Any, config: RunnableConfig | None = None, **kwargs: Any
    ) -> AsyncIterator[Any]:
        merged = ensure_config(self.config, config)
        reason = self._fallback_reason(merged)
        if reason is not None or self._refused_by_stock(merged):
            if reason is not None:
                self._warn_fallback(reason)
            if self._alto.lm_config() and not self._alto.deployment.started:  # type: ignore[union-attr]
                await asyncio.to_thread(self._alto.deployment.start)  # type: ignore[union-attr]
            stock = super().astream(input, self._in_process(config, merged), **kwargs)
            async with aclosing(stock) as stream:
                async for chunk in stream:
                    yield chunk
            return
        deployment = self._alto.deployment
        if deployment is not None and not deployment.started:
            await asyncio.to_thread(deployment.start)  # the first run starts the processes
        run = AsyncRequestRun(
            max_concurrency=merged.get("max_concurrency"), **self._run_args(merged, kwargs)
        )
        stream = super().astream(input, _with_hook(config, run, self._alto), **kwargs)
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
        reason = self._fallback_reason(merged)
        if reason is not None or self._refused_by_stock(merged):
            if reason is not None:
                self._warn_fallback(reason)
            if self._alto.lm_config():  # its nodes' ChatAlto calls go to the LM stages
                self._alto.deployment.start()  # type: ignore[union-attr]
            yield from super().stream(input, self._in_process(config, merged), **kwargs)
            return
        if self._alto.deployment is not None:
            self._alto.deployment.start()  # the first run starts the processes
        run = SyncRequestRun(config=merged, **self._run_args(merged, kwargs))
        try:
            yield from super().stream(input, _with_hook(config, run, self._alto), **kwargs)
        finally:
            run.close()

    def _in_process(self, config: RunnableConfig | None, merged: RunnableConfig) -> Any:
        """``config`` for a run on stock LangGraph: node code runs in this process too
        (the store is the app's, and LangGraph hands it to the node). Not when LangGraph
        refuses the run (``_refused_by_stock``): alto's key would hide why."""
        if self._refused_by_stock(merged):
            return config
        config = dict(config or {})
        config[CONF] = {
            **config.get(CONF, {}),
            CONFIG_KEY_IN_PROCESS: True,
            **self._alto.lm_config(),
        }
        return config

    def _run_args(self, merged: RunnableConfig, kwargs: dict[str, Any]) -> dict[str, Any]:
        conf = merged.get(CONF, {})
        alto = self._alto
        never_ahead, pulls = alto.never_ahead, alto.pulls
        if held_at_step(self, merged, kwargs):
            never_ahead, pulls = frozenset(alto.runners), {}
        elif alto.with_memory and resolve_checkpointer(self, merged) is not None:
            never_ahead = never_ahead | alto.with_memory
            pulls = {n: p for n, p in pulls.items() if n not in alto.with_memory}
        return {
            # a subgraph's run belongs to the request of the graph that runs it
            "request_id": conf.get(CONFIG_KEY_REQUEST) or str(merged.get("run_id") or new_id()),
            # run inside a node of an alto graph: a nested scope of that task's item
            "root": merged.get(CONF, {}).get(CONFIG_KEY_ANCESTRY, ()),
            "runners": self._alto.runners,
            "retry_policy": self.retry_policy,
            "streaming": self._alto.streaming,
            "folds": self._alto.folds,
            "at_step": self._alto.at_step,
            "pulls": pulls,
            "barriers": self._alto.barriers,
            "never_ahead": never_ahead,
            "ahead_stats": self._alto.ahead_stats,
        }


#: modules whose frames stand between a fallback warning and the user's call
_LIBRARIES = ("alto_langgraph", "langgraph", "langchain_core", "langchain", "asyncio", "contextlib")


def _user_stacklevel() -> int:
    """The ``stacklevel`` that makes a warning issued by this function's caller name
    the first frame outside LangGraph, LangChain and alto: the user's call site, be it
    ``invoke``, ``stream`` or an async call."""
    frame = sys._getframe(2)
    level = 2
    while frame is not None and frame.f_globals.get("__name__", "").startswith(_LIBRARIES):
        frame = frame.f_back
        level += 1
    return level


def _with_hook(config: RunnableConfig | None, run: RequestRun, alto: _AltoState) -> RunnableConfig:
    """``config`` with ``run`` installed as LangGraph's runner-submit hook, the request
    id every task carries (routing keys of stateful stages include it) and the app's
    LM stages (where ``ChatAlto`` calls go)."""
    config = dict(config or {})
    config[CONF] = {
        **config.get(CONF, {}),
        CONFIG_KEY_RUNNER_SUBMIT: run,
        CONFIG_KEY_REQUEST: run.request_id,
        **alto.lm_config(),
    }
    return config  # type: ignore[return-value]
