"""Every catalogue graph gives the same final state and the same updates as stock LangGraph."""

from __future__ import annotations

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
