"""pytest-benchmark: per-run overhead of LangGraph and alto on no-op graphs.

    python -m pytest comparisons --benchmark-only

Groups put the two backends side by side; compare their means (the ratio is what
matters, these machines are shared and noisy). comparisons/overhead.py prints the
same measurement as per-task ratios.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from overhead import chain, fanout


def _runner(app: Any) -> Any:
    loop = asyncio.new_event_loop()

    def once() -> Any:
        return loop.run_until_complete(app.ainvoke({"n": 0}, {"recursion_limit": 100_000}))

    return once, loop


SHAPES = {"fan-out of 500 Sends": (fanout, 500, 502), "chain of 50 steps": (chain, 50, 50)}


BACKENDS = {
    "langgraph": {},
    "alto-auto": {"backend": "alto"},  # the default executor
    "alto-inline": {"backend": "alto", "executor": "inline"},
    "alto-process": {"backend": "alto", "executor": "process"},
}


@pytest.mark.parametrize("backend", list(BACKENDS))
@pytest.mark.parametrize("shape", list(SHAPES))
def test_overhead(benchmark: Any, shape: str, backend: str) -> None:
    build, size, expected = SHAPES[shape]
    benchmark.group = shape
    app = build(size).compile(**BACKENDS[backend])
    once, loop = _runner(app)
    try:
        result = benchmark.pedantic(once, rounds=5, warmup_rounds=1)
    finally:
        loop.close()
        if backend != "langgraph":
            app.close()
    assert result == {"n": expected}
