"""Every catalogue graph gives the same final state and the same updates as stock LangGraph."""

from __future__ import annotations

from collections import Counter

import pytest
from graphs import CASES
from harness import assert_same

EXECUTORS = ("auto", "inline", "process")
PARAMS = [
    pytest.param(name, style, executor, id=f"{name}-{style}-{executor}")
    for name, case in CASES.items()
    for style in case.styles
    for executor in EXECUTORS
]


@pytest.mark.parametrize(("name", "style", "executor"), PARAMS)
def test_same_as_langgraph(name: str, style: str, executor: str) -> None:
    case = CASES[name]
    stock, alto = assert_same(
        case.build, sync=style == "sync", ordered=case.ordered, executor=executor, **case.kwargs
    )
    # a case that produced nothing would compare equal vacuously
    assert stock.chunks or stock.error is not None


def test_catalogue_is_large_enough() -> None:
    assert len(CASES) >= 40


async def _events(case_name: str, backend: str, executor: str) -> tuple[Counter, str | None, int]:
    """The (event, name) pairs a run streams, its error, and (alto) how many of its
    tasks ran ahead and were not adopted (misses and dropped twins)."""
    builder, inputs = CASES[case_name].build()
    app = builder.compile(backend=backend, **({"executor": executor} if backend == "alto" else {}))
    kwargs = {k: v for k, v in CASES[case_name].kwargs.items() if k in ("config", "context")}
    seen: Counter = Counter()
    error = None
    try:
        async for event in app.astream_events(inputs, version="v2", **kwargs):
            seen[(event["event"], event["name"])] += 1
    except Exception as exc:
        error = type(exc).__name__
    finally:
        wasted = 0
        if backend == "alto":
            stats = app.run_ahead_stats().values()
            wasted = sum(s["missed"] + s["dropped"] for s in stats)
            app.close()
    return seen, error, wasted


@pytest.mark.parametrize("executor", EXECUTORS)
@pytest.mark.parametrize("name", [n for n, c in CASES.items() if "async" in c.styles])
async def test_same_astream_events_as_langgraph(name: str, executor: str) -> None:
    """astream_events (LangChain callbacks, streamed node procs) sees the same runs,
    plus those of tasks that ran ahead and were not adopted: a miss shows as a second
    run of its node, as a retry does."""
    stock_events, stock_error, _ = await _events(name, "pregel", executor)
    alto_events, alto_error, wasted = await _events(name, "alto", executor)
    assert alto_error == stock_error
    if stock_error is None:  # which runs start before a failure is a race on stock too
        assert not stock_events - alto_events  # every run of stock's is there
        extra = alto_events - stock_events
        if not wasted:
            assert not extra
        # what a wasted run shows are runs stock makes too (its node, what it calls)
        assert {name for _, name in extra} <= {name for _, name in stock_events}
