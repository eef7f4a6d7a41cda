"""Run one graph under stock LangGraph and under alto, and compare what users can see."""

from __future__ import annotations

import asyncio
import dataclasses
import re
import warnings
from collections.abc import Callable
from typing import Any

from langgraph.graph import StateGraph

import alto_langgraph  # noqa: F401  (installs backend=)


@dataclasses.dataclass
class Outcome:
    """What one run produced: the final state (or the exception) and the stream chunks."""

    final: Any = None
    chunks: list[Any] = dataclasses.field(default_factory=list)
    error: BaseException | None = None
    #: alto: ``app.run_ahead_stats()`` after the run
    ahead: dict[str, Any] = dataclasses.field(default_factory=dict)

    def error_signature(self) -> tuple[str, str] | None:
        if self.error is None:
            return None
        text = str(self.error).split("\nFor troubleshooting")[0]
        return (type(self.error).__name__, _ELAPSED.sub("", text))


_ELAPSED = re.compile(r" \(elapsed: [0-9.]+s\)")
_UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}|\b[0-9a-f]{32}\b")


def canonical(chunk: Any) -> str:
    """A stable text form of a stream chunk, for multiset comparison. Task ids (in
    namespaces and message metadata) and interrupt ids (hashes of them) are random per
    run, on stock LangGraph too."""
    return _UUID.sub("<id>", repr(chunk))


def run(
    builder: StateGraph,
    inputs: Any,
    *,
    backend: str,
    sync: bool,
    executor: str = "process",
    config: dict | None = None,
    stream_mode: Any = "updates",
    options: dict[str, Any] | None = None,
    **stream_kwargs: Any,
) -> Outcome:
    """Stream the graph once, collecting chunks; the final state comes from the same run.
    ``options``: more alto options."""
    alto_options = {"executor": executor, **(options or {})}
    app = builder.compile(backend=backend, **(alto_options if backend == "alto" else {}))
    out = Outcome()
    modes = [stream_mode] if isinstance(stream_mode, str) else list(stream_mode)
    want_values = "values" not in modes
    run_modes = modes + (["values"] if want_values else [])

    def take(item: Any) -> None:
        if stream_kwargs.get("subgraphs"):
            ns, mode, data = item
        else:
            ns, (mode, data) = (), item
        if mode == "values" and ns == ():
            out.final = data
        if mode in modes:
            out.chunks.append((ns, mode, data) if stream_kwargs.get("subgraphs") else (mode, data))

    try:
        if sync:
            for item in app.stream(inputs, config, stream_mode=run_modes, **stream_kwargs):
                take(item)
        else:

            async def go() -> None:
                async for item in app.astream(
                    inputs, config, stream_mode=run_modes, **stream_kwargs
                ):
                    take(item)

            asyncio.run(go())
    except Exception as exc:  # compared, not swallowed: see assert_same
        out.error = exc
    finally:
        if backend == "alto":
            out.ahead = app.run_ahead_stats()
            app.close()
    return out


def assert_same(
    case: Callable[[], tuple[StateGraph, Any]],
    *,
    sync: bool,
    ordered: bool = False,
    executor: str = "process",
    **kw: Any,
) -> tuple[Outcome, Outcome]:
    """Build the case twice (fresh closures), run it on both backends, compare."""
    with warnings.catch_warnings():
        warnings.simplefilter("error", alto_langgraph.AltoFallbackWarning)
        builder, inputs = case()
        stock = run(builder, inputs, backend="pregel", sync=sync, **kw)
        builder, inputs = case()
        alto = run(builder, inputs, backend="alto", sync=sync, executor=executor, **kw)
    assert alto.error_signature() == stock.error_signature(), (alto.error, stock.error)
    assert canonical(alto.final) == canonical(stock.final)
    if not (isinstance(stock.final, dict) and "__interrupt__" in stock.final):
        assert alto.final == stock.final
    if stock.error is not None:
        # which sibling updates stream before a failure is a race on stock LangGraph too
        return stock, alto
    if ordered:
        assert [canonical(c) for c in alto.chunks] == [canonical(c) for c in stock.chunks]
    else:
        assert sorted(map(canonical, alto.chunks)) == sorted(map(canonical, stock.chunks))
    return stock, alto
