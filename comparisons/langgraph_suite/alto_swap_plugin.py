"""pytest plugin: run LangGraph's own test suite with every StateGraph on alto.

Load it with ``-p alto_swap_plugin`` (this folder on PYTHONPATH). At import time,
i.e. before any test module is collected, it replaces ``StateGraph.compile`` by a
wrapper that defaults to ``backend="alto"`` with alto's default executor (no
``executor`` argument, i.e. ``"auto"``), or the one ``$ALTO_EXECUTOR`` names; nothing
in the tests changes.

It also counts, per test:

* ``compiles``: StateGraph.compile calls that were swapped to alto;
* ``alto_runs``: graph runs (stream/astream/invoke..., subgraph runs included) that ran
  on alto, i.e. created alto's per-run coordinator ``RequestRun``;
* ``run_ahead`` / ``adopted`` / ``missed``: tasks alto started ahead of their superstep
  (Send targets and edge-triggered tasks) / whose result the loop took / that ran
  again at their step (a key they read received a write they did not see);
* ``fallback_runs``: calls that fell back to stock LangGraph (checkpointer, interrupts,
  node cache), with the reasons;

and prints the totals at the end of the session (xdist workers included). With
``ALTO_SWAP_REPORT=path.json`` the per-test counts are written there as JSON.
"""

from __future__ import annotations

import collections
import json
import os
import threading
from typing import Any

from langgraph.graph import StateGraph

import alto_langgraph  # noqa: F401  (installs the backend= patch)
from alto_langgraph import _plug
from alto_langgraph.graph import AltoCompiledStateGraph
from alto_langgraph.scheduling import coordinator

_lock = threading.Lock()
_current_test: list[str] = ["<collection>"]
#: test nodeid -> {"compiles": n, "alto_runs": n, "fallback_runs": n, "reasons": {...}}
COUNTS: dict[str, dict[str, Any]] = collections.defaultdict(
    lambda: {"compiles": 0, "alto_runs": 0, "fallback_runs": 0, "reasons": {}}
)


def _bump(key: str, reason: str | None = None, n: int = 1) -> None:
    with _lock:
        entry = COUNTS[_current_test[0]]
        entry[key] = entry.get(key, 0) + n
        if reason is not None:
            entry["reasons"][reason] = entry["reasons"].get(reason, 0) + 1


def _swapped_compile(self: StateGraph, *args: Any, **kwargs: Any) -> Any:
    kwargs.setdefault("backend", "alto")
    if kwargs["backend"] == "alto":
        # no executor argument: alto's default ("auto": node code in the app process,
        # as on stock LangGraph, unless a stage asks for workers); $ALTO_EXECUTOR
        # (auto, inline or process) names one explicitly
        if os.environ.get("ALTO_EXECUTOR"):
            kwargs.setdefault("executor", os.environ["ALTO_EXECUTOR"])
        _bump("compiles")
    return _plug._compile_with_backend(self, *args, **kwargs)


def _count_run(run: coordinator.RequestRun) -> None:
    _bump("alto_runs")
    _bump("run_ahead", n=run.stats["run_ahead"])
    _bump("adopted", n=run.stats["adopted"])
    _bump("missed", n=run.stats["missed"])


_orig_aclose = coordinator.AsyncRequestRun.aclose
_orig_close = coordinator.SyncRequestRun.close


async def _counting_aclose(self: coordinator.AsyncRequestRun) -> None:
    """alto's per-run coordinator, counted when it closes: one per graph (or subgraph) run."""
    await _orig_aclose(self)
    _count_run(self)


def _counting_close(self: coordinator.SyncRequestRun) -> None:
    _orig_close(self)
    _count_run(self)


_orig_warn_fallback = AltoCompiledStateGraph._warn_fallback


def _counting_warn_fallback(self: Any, reason: str) -> None:
    _bump("fallback_runs", reason)
    _orig_warn_fallback(self, reason)


# Installed at import, i.e. before collection (test modules only call compile inside
# test functions or fixtures, but some build graphs at module level).
StateGraph.compile = _swapped_compile  # type: ignore[method-assign]
AltoCompiledStateGraph._warn_fallback = _counting_warn_fallback  # type: ignore[method-assign]
coordinator.AsyncRequestRun.aclose = _counting_aclose  # type: ignore[method-assign]
coordinator.SyncRequestRun.close = _counting_close  # type: ignore[method-assign]


def pytest_runtest_setup(item: Any) -> None:
    _current_test[0] = item.nodeid


def pytest_runtest_teardown(item: Any) -> None:
    _current_test[0] = item.nodeid


def _totals(counts: dict[str, dict[str, Any]]) -> dict[str, Any]:
    tot = {
        "tests_with_compiles": 0,
        "compiles": 0,
        "alto_runs": 0,
        "fallback_runs": 0,
        "tests_with_alto_runs": 0,
        "run_ahead": 0,
        "adopted": 0,
        "missed": 0,
        "reasons": collections.Counter(),
    }
    for entry in counts.values():
        tot["run_ahead"] += entry.get("run_ahead", 0)
        tot["adopted"] += entry.get("adopted", 0)
        tot["missed"] += entry.get("missed", 0)
        tot["compiles"] += entry["compiles"]
        tot["alto_runs"] += entry["alto_runs"]
        tot["fallback_runs"] += entry["fallback_runs"]
        tot["tests_with_compiles"] += entry["compiles"] > 0
        tot["tests_with_alto_runs"] += entry["alto_runs"] > 0
        tot["reasons"].update(entry["reasons"])
    tot["reasons"] = dict(tot["reasons"])
    return tot


def pytest_configure(config: Any) -> None:
    config._alto_swap_counts = {}  # filled from xdist workers


def pytest_testnodedown(node: Any, error: Any) -> None:
    # xdist controller: collect a worker's counts
    data = getattr(node, "workeroutput", {}).get("alto_swap")
    if data:
        node.config._alto_swap_counts.update(json.loads(data))


def pytest_sessionfinish(session: Any, exitstatus: Any) -> None:
    config = session.config
    if hasattr(config, "workerinput"):  # xdist worker: ship counts to the controller
        config.workeroutput["alto_swap"] = json.dumps(dict(COUNTS))
        return
    counts = {**dict(COUNTS), **config._alto_swap_counts}
    config._alto_swap_counts = counts
    path = os.environ.get("ALTO_SWAP_REPORT")
    if path:
        with open(path, "w") as f:
            json.dump(counts, f, indent=1, sort_keys=True)


def pytest_terminal_summary(terminalreporter: Any) -> None:
    counts = getattr(terminalreporter.config, "_alto_swap_counts", None)
    if counts is None:
        return
    tot = _totals(counts)
    terminalreporter.write_sep("=", "alto swap")
    terminalreporter.write_line(
        "executor: " + (os.environ.get("ALTO_EXECUTOR") or "alto's default (auto)")
    )
    terminalreporter.write_line(
        f"StateGraph.compile swapped to backend='alto': {tot['compiles']} compiles "
        f"in {tot['tests_with_compiles']} tests; runs on alto: {tot['alto_runs']} "
        f"(in {tot['tests_with_alto_runs']} tests); fallbacks to stock: "
        f"{tot['fallback_runs']} {tot['reasons']}; tasks run ahead: "
        f"{tot['run_ahead']}, adopted by the loop: {tot['adopted']}, missed: {tot['missed']}"
    )
