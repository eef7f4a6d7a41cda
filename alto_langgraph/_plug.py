"""``StateGraph.compile(backend=...)``: the one patch alto makes to LangGraph.

``import alto_langgraph`` installs it; ``backend`` absent or ``"pregel"`` is stock
LangGraph, unchanged. ``uninstall()`` restores the original method.
"""

from __future__ import annotations

import functools
from typing import Any

from langgraph.graph import StateGraph
from langgraph.graph.state import CompiledStateGraph

from . import assertions
from .graph import AltoCompiledStateGraph
from .options import AltoOptions

BACKENDS = ("pregel", "alto")
_stock_compile = StateGraph.compile


def _compile_with_backend(
    self: StateGraph, checkpointer: Any = None, *, backend: str = "pregel", **kwargs: Any
) -> CompiledStateGraph:
    if backend not in BACKENDS:
        raise ValueError(f"unknown backend {backend!r}: expected one of {', '.join(BACKENDS)}")
    declared = {k: kwargs.pop(k) for k in _ASSERTION_ARGS if k in kwargs}
    if backend == "pregel":
        graph = _stock_compile(self, checkpointer, **kwargs)
        _attach_assertions(graph, declared)
        return graph
    stock_kwargs = {k: kwargs.pop(k) for k in list(kwargs) if k in _STOCK_COMPILE_ARGS}
    options = AltoOptions.from_kwargs(kwargs)
    graph = _stock_compile(self, checkpointer, **stock_kwargs)
    _attach_assertions(graph, declared, options)
    return AltoCompiledStateGraph._adopt(graph, options)


#: compile arguments of both backends: model assertions and where their flags go
_ASSERTION_ARGS = ("assertions", "flag_store")


def _attach_assertions(
    graph: CompiledStateGraph, declared: dict[str, Any], options: AltoOptions | None = None
) -> None:
    """The assertions given in code, and (on alto) those of the stage tables."""
    given = assertions.declared(declared.get("assertions"))
    every = [a for checks in given.values() for a in checks]
    if options is not None:
        every += options.stage_assertions()
    if every:
        assertions.attach(graph, every, declared.get("flag_store"))
    elif declared.get("flag_store") is not None:
        raise ValueError("compile: flag_store is given, but no assertions to keep flags of")


_compile_with_backend = functools.wraps(_stock_compile)(_compile_with_backend)
_STOCK_COMPILE_ARGS = frozenset(
    ("cache", "store", "interrupt_before", "interrupt_after", "debug", "name", "transformers")
)


def install() -> None:
    """Make ``StateGraph.compile`` accept ``backend=``. Idempotent."""
    StateGraph.compile = _compile_with_backend  # type: ignore[method-assign]


def uninstall() -> None:
    """Restore LangGraph's own ``StateGraph.compile``."""
    StateGraph.compile = _stock_compile  # type: ignore[method-assign]


def compile(graph: StateGraph | CompiledStateGraph, **options: Any) -> AltoCompiledStateGraph:
    """Compile ``graph`` for the alto backend.

    ``graph`` is a ``StateGraph`` builder or an already compiled graph (prebuilt agents
    included): a compiled graph is recompiled from its ``.builder`` with the same
    checkpointer, store, cache, interrupts, debug flag and name. ``options`` are alto
    options (see ``AltoOptions``) plus, for a builder, LangGraph's own compile arguments.
    """
    if isinstance(graph, AltoCompiledStateGraph):
        raise TypeError("alto_langgraph.compile: this graph is already compiled for alto")
    if "backend" in options:
        # else StateGraph.compile's "got multiple values for keyword argument 'backend'"
        raise TypeError(
            "alto_langgraph.compile always compiles for alto: backend= is an argument "
            "of StateGraph.compile, not of alto_langgraph.compile "
            f"(got backend={options['backend']!r})"
        )
    if isinstance(graph, CompiledStateGraph):
        builder = graph.builder
        inherited = {
            "cache": graph.cache,
            "store": graph.store,
            "interrupt_before": graph.interrupt_before_nodes or None,
            "interrupt_after": graph.interrupt_after_nodes or None,
            "debug": graph.debug,
            "name": graph.name,
        }
        stock = {
            **inherited,
            **{k: options.pop(k) for k in list(options) if k in _STOCK_COMPILE_ARGS},
        }
        checkpointer = options.pop("checkpointer", graph.checkpointer)
        declared = {k: options.pop(k) for k in _ASSERTION_ARGS if k in options}
        if "assertions" not in declared:  # the app's own, from its nodes (a new compile
            carried, store = assertions.declarations_of(graph)  # would drop them)
            if carried:
                declared = {"assertions": carried, "flag_store": store, **declared}
        compiled = _stock_compile(builder, checkpointer, **stock)
        if graph.config:
            compiled = compiled.with_config(graph.config)
        alto_options = AltoOptions.from_kwargs(options)
        _attach_assertions(compiled, declared, alto_options)
        return AltoCompiledStateGraph._adopt(compiled, alto_options)
    if isinstance(graph, StateGraph):
        checkpointer = options.pop("checkpointer", None)
        return _compile_with_backend(graph, checkpointer, backend="alto", **options)
    raise TypeError(
        "alto_langgraph.compile expects a langgraph StateGraph or a compiled graph, "
        f"got {type(graph).__name__}"
    )
