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


@pytest.mark.parametrize("backend", ["pregel", "alto"])
@pytest.mark.benchmark(group="fan-out of 500 Sends")
def test_fanout_500(benchmark: Any, backend: str) -> None:
    once, loop = _runner(fanout(500).compile(backend=backend))
    try:
        result = benchmark.pedantic(once, rounds=5, warmup_rounds=1)
    finally:
        loop.close()
    assert result == {"n": 502}


@pytest.mark.parametrize("backend", ["pregel", "alto"])
@pytest.mark.benchmark(group="chain of 50 steps")
def test_chain_50(benchmark: Any, backend: str) -> None:
    once, loop = _runner(chain(50).compile(backend=backend))
    try:
        result = benchmark.pedantic(once, rounds=5, warmup_rounds=1)
    finally:
        loop.close()
    assert result == {"n": 50}
