"""Every catalogue graph gives the same final state and the same updates as stock LangGraph."""

from __future__ import annotations

from collections import Counter

import pytest
from graphs import CASES
from harness import assert_same

PARAMS = [
    pytest.param(name, style, id=f"{name}-{style}")
    for name, case in CASES.items()
    for style in case.styles
]


@pytest.mark.parametrize(("name", "style"), PARAMS)
def test_same_as_langgraph(name: str, style: str) -> None:
    case = CASES[name]
    stock, alto = assert_same(case.build, sync=style == "sync", ordered=case.ordered, **case.kwargs)
    # a case that produced nothing would compare equal vacuously
    assert stock.chunks or stock.error is not None


def test_catalogue_is_large_enough() -> None:
    assert len(CASES) >= 40


async def _events(case_name: str, backend: str) -> tuple[Counter, str | None]:
    builder, inputs = CASES[case_name].build()
    app = builder.compile(backend=backend)
    kwargs = {k: v for k, v in CASES[case_name].kwargs.items() if k in ("config", "context")}
    seen: Counter = Counter()
    try:
        async for event in app.astream_events(inputs, version="v2", **kwargs):
            seen[(event["event"], event["name"])] += 1
    except Exception as exc:
        return seen, type(exc).__name__
    return seen, None


@pytest.mark.parametrize("name", [n for n, c in CASES.items() if "async" in c.styles])
async def test_same_astream_events_as_langgraph(name: str) -> None:
    """astream_events (LangChain callbacks, streamed node procs) sees the same runs."""
    stock_events, stock_error = await _events(name, "pregel")
    alto_events, alto_error = await _events(name, "alto")
    assert alto_error == stock_error
    if stock_error is None:  # which runs start before a failure is a race on stock too
        assert alto_events == stock_events
