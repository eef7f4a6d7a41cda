"""Model assertions (``alto_langgraph/assertions.py``, ``flagstore.py``): each severity
on stock LangGraph and on alto, in the app and in worker processes, with the same
answers and the same flags; feedback to a retried node; clear errors for bad
declarations and for checks that raise; the flag store's records, filters, export and
labels; per-assertion counts and callback events."""

from __future__ import annotations

import asyncio
import io
import json
import operator
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Annotated, Any, TypedDict

import pytest
from langchain_core.callbacks import BaseCallbackHandler
from langgraph.graph import START, StateGraph
from langgraph.types import RetryPolicy, Send
from pydantic import BaseModel

import alto_langgraph
from alto_langgraph import (
    AssertionCheckError,
    AssertionViolation,
    FlagStore,
    assertion,
)
from alto_langgraph.assertions import EVENT, feedback, stats

#: every way a node can run: stock LangGraph, alto in the app, alto in a worker
BACKENDS = {
    "stock": {"backend": "pregel"},
    "alto-app": {"backend": "alto"},
    "alto-process": {"backend": "alto", "executor": "process"},
}


class S(TypedDict):
    qs: list[int]
    out: Annotated[list, operator.add]


def _fan(s: S) -> list[Send]:
    return [Send("square", {"q": q}) for q in s["qs"]]


def _square(s: dict) -> dict:
    """q*q, except that a first attempt at q == 3 is off by one (a flaky model), and
    what the assertions said so far (``feedback()``) is in the output."""
    said = feedback()
    wrong = 1 if s["q"] == 3 and not said else 0
    return {"out": [(s["q"], s["q"] * s["q"] + wrong, list(said))]}


async def _asquare(s: dict) -> dict:
    await asyncio.sleep(0)
    return _square(s)


def _graph(node: Any = _square, ahead: bool = False) -> StateGraph:
    """``square`` over each of ``qs``; ``ahead``: sent by a node with a slow sibling,
    so that on alto the Sends run ahead of their superstep."""
    g = StateGraph(S)
    g.add_node("square", node)
    if ahead:
        g.add_node("prep", lambda s: {})
        g.add_node("slow", lambda s: time.sleep(0.3) or {})
        g.add_edge(START, "prep")
        g.add_edge(START, "slow")
        g.add_conditional_edges("prep", _fan, ["square"])
    else:
        g.add_conditional_edges(START, _fan, ["square"])
    return g


@assertion("square", severity="record")
def small(_: Any, output: dict) -> Any:
    value = output["out"][0][1]
    return value < 50 or f"{value} is not small"


@assertion("square", severity="retry")
def is_square(input: dict, output: dict) -> bool:
    q, value, _ = output["out"][0]
    return value == q * q


@assertion("square", severity="fail")
def not_seven(input: dict, _: Any) -> None:
    assert input["q"] != 7, "seven is not allowed"


def _flags(path: Path) -> list[tuple]:
    """What was flagged, as comparable across backends (ids and times differ)."""
    return sorted(
        (
            f["node"],
            f["assertion"],
            f["severity"],
            f["message"],
            json.dumps(f["input"], sort_keys=True),
            json.dumps(f["output"], sort_keys=True),
        )
        for f in FlagStore(path).flags()
    )


def _run(
    backend: str, tmp_path: Path, qs: list[int], node: Any = _square, ahead: bool = False
) -> Any:
    path = tmp_path / f"{backend}.sqlite"
    app = _graph(node, ahead).compile(
        **BACKENDS[backend], assertions=[small, is_square, not_seven], flag_store=path
    )
    try:
        if node is _asquare:
            out = asyncio.run(app.ainvoke({"qs": qs}))
        else:
            out = app.invoke({"qs": qs})
        ahead_stats = app.run_ahead_stats() if backend != "stock" else {}
        return out, _flags(path), stats(app), ahead_stats
    finally:
        if backend != "stock":
            app.close()


@pytest.mark.parametrize("ahead", [False, True], ids=["at-step", "run-ahead"])
@pytest.mark.parametrize("node", [_square, _asquare], ids=["sync", "async"])
def test_each_severity_gives_the_same_answers_and_flags_on_every_backend(
    tmp_path: Path, node: Any, ahead: bool
) -> None:
    """Run ahead, the retry assertion fires in the twin; the loop's task, adopting its
    failure as a first attempt, reruns the node with the twin's feedback."""
    results = {b: _run(b, tmp_path, [1, 3, 8], node, ahead) for b in BACKENDS}
    out, flags, counts, _ = results["stock"]
    # q=3: its first attempt fired the retry assertion, its second saw the feedback
    assert sorted(map(tuple, out["out"])) == [
        (1, 1, []),
        (3, 9, ["assertion 'is_square' did not hold"]),
        (8, 64, []),
    ]
    assert [(f[1], f[2], f[3]) for f in flags] == [
        ("is_square", "retry", "assertion 'is_square' did not hold"),
        ("small", "record", "64 is not small"),
    ]
    assert counts["square"]["is_square"]["checked"] == 4  # 3 items, one retried
    assert counts["square"]["small"]["fired"] == 1
    if ahead:
        assert results["alto-app"][3]["square"]["run_ahead"] == 3
    for backend, (b_out, b_flags, b_counts, _) in results.items():
        assert sorted(map(tuple, b_out["out"])) == sorted(map(tuple, out["out"])), backend
        assert b_flags == flags, backend
        assert {a: (c["checked"], c["fired"]) for a, c in b_counts["square"].items()} == {
            a: (c["checked"], c["fired"]) for a, c in counts["square"].items()
        }, backend


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_fail_assertion_ends_the_request_naming_it_and_the_app_serves_on(
    tmp_path: Path, backend: str
) -> None:
    path = tmp_path / "flags.sqlite"
    app = _graph().compile(**BACKENDS[backend], assertions=[not_seven], flag_store=path)
    try:
        with pytest.raises(AssertionViolation) as caught:
            app.invoke({"qs": [2, 7]})
        exc = caught.value
        assert (exc.assertion, exc.node, exc.severity) == ("not_seven", "square", "fail")
        assert "assertion 'not_seven' on node 'square'" in str(exc)
        assert "seven is not allowed" in str(exc)
        assert isinstance(exc, AssertionError) and isinstance(exc, alto_langgraph.AltoError)
        if backend != "stock":  # alto knows which fan-out item it was
            assert exc.ancestry is not None and len(exc.ancestry) == 1
        assert sorted(map(tuple, app.invoke({"qs": [2]})["out"])) == [(2, 4, [])]
    finally:
        if backend != "stock":
            app.close()
    (flag,) = FlagStore(path).flags()
    assert (flag["assertion"], flag["severity"], flag["input"]) == ("not_seven", "fail", {"q": 7})


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_retry_assertion_that_keeps_firing_fails_after_its_attempts(
    tmp_path: Path, backend: str
) -> None:
    never = assertion("square", severity="retry", name="never", max_attempts=2)(
        lambda i, o: "not yet"
    )
    path = tmp_path / "flags.sqlite"
    app = _graph().compile(**BACKENDS[backend], assertions=[never], flag_store=path)
    try:
        with pytest.raises(AssertionViolation, match="assertion 'never' on node 'square'.*not yet"):
            app.invoke({"qs": [5]})
        assert stats(app)["square"]["never"]["checked"] == 2
    finally:
        if backend != "stock":
            app.close()
    assert [f["message"] for f in FlagStore(path).flags()] == ["not yet", "not yet"]


def test_the_node_s_own_retry_policy_still_applies_after_the_assertion_s(
    tmp_path: Path,
) -> None:
    calls: list[int] = []

    def flaky(s: dict) -> dict:
        calls.append(s["q"])
        if len(calls) == 1:
            raise ConnectionError("the first call fails")
        return _square(s)

    for backend in ("stock", "alto-app"):
        calls.clear()
        g = StateGraph(S)
        g.add_node("square", flaky, retry_policy=RetryPolicy(initial_interval=0, max_attempts=3))
        g.add_conditional_edges(START, _fan, ["square"])
        app = g.compile(
            **BACKENDS[backend], assertions=[is_square], flag_store=tmp_path / "f.sqlite"
        )
        out = app.invoke({"qs": [3]})
        # a ConnectionError (the node's policy), then the assertion's retry, then done
        assert len(calls) == 3, backend
        assert out["out"] == [(3, 9, ["assertion 'is_square' did not hold"])], backend


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_check_that_raises_fails_the_request_naming_it(tmp_path: Path, backend: str) -> None:
    broken = assertion("square", name="broken")(lambda i, o: o["missing"])
    bad_return = assertion("square", name="bad_return")(lambda i, o: 0.5)
    for check, says in ((broken, "KeyError: 'missing'"), (bad_return, "it returned 0.5")):
        app = _graph().compile(
            **BACKENDS[backend], assertions=[check], flag_store=tmp_path / "f.sqlite"
        )
        try:
            with pytest.raises(AssertionCheckError) as caught:
                app.invoke({"qs": [1]})
            assert caught.value.assertion == check.name
            assert f"assertion {check.name!r} on node 'square' raised" in str(caught.value)
            assert says in str(caught.value)
        finally:
            if backend != "stock":
                app.close()


def test_plain_functions_by_node_are_record_assertions(tmp_path: Path) -> None:
    def odd(i: dict, o: dict) -> bool:
        return i["q"] % 2 == 1

    path = tmp_path / "f.sqlite"
    app = _graph().compile(backend="alto", assertions={"square": [odd]}, flag_store=path)
    with app:
        app.invoke({"qs": [1, 2, 3, 4]})
        counts = stats(app)["square"]["odd"]
        assert {k: v for k, v in counts.items() if k != "seconds"} == {
            "severity": "record",
            "checked": 4,
            "fired": 2,
        }
        assert 0 < counts["seconds"] < 1
    assert sorted(f["input"]["q"] for f in FlagStore(path).flags(assertion="odd")) == [2, 4]


class K(TypedDict):
    k: int
    log: Annotated[list, operator.add]


@assertion("c", name="saw")
def saw(input: dict, output: dict) -> str:
    return f"k={input['k']}"  # always fires: records what the node was given


def test_tasks_run_ahead_keep_only_the_flags_of_the_runs_the_loop_adopts(
    tmp_path: Path,
) -> None:
    """Run-ahead stays on for asserted nodes; what a twin flags is kept only when the
    loop adopts it. ``c`` runs ahead after ``a`` on a view without ``b``'s write of
    ``k``, reads ``k``, and misses: only its run at its step (which saw ``b``'s write,
    as on stock) is flagged and counted. The Sends of ``prep`` run ahead of ``slow``
    and are adopted: flagged once each."""
    g = StateGraph(K)
    g.add_node("a", lambda s: {"log": ["a"]})
    g.add_node("b", lambda s: time.sleep(0.3) or {"k": 2})
    g.add_node("c", lambda s: {"log": [f"c saw {s['k']}"]})
    g.add_edge(START, "a")
    g.add_edge(START, "b")
    g.add_edge("a", "c")
    flags = {}
    for backend in ("stock", "alto-app", "alto-process"):
        path = tmp_path / f"{backend}.sqlite"
        app = g.compile(**BACKENDS[backend], assertions=[saw], flag_store=path)
        out = app.invoke({"k": 1, "log": []})
        flags[backend] = _flags(path)
        assert out["log"] == ["a", "c saw 2"], backend
        assert stats(app)["c"]["saw"]["checked"] == 1, backend
        if backend != "stock":
            assert app.run_ahead_stats()["c"]["missed"] == 1, backend  # the twin ran
            app.close()
    assert [f[3] for f in flags["stock"]] == ["k=2"]
    assert flags["alto-app"] == flags["alto-process"] == flags["stock"]

    s = StateGraph(S)
    s.add_node("prep", lambda s: {})
    s.add_node("slow", lambda s: time.sleep(0.3) or {})
    s.add_node("square", _square)
    s.add_edge(START, "prep")
    s.add_edge(START, "slow")
    s.add_conditional_edges("prep", _fan, ["square"])
    with s.compile(backend="alto", assertions=[small], flag_store=tmp_path / "s.sqlite") as app:
        line = next(ln for ln in str(app.plan).splitlines() if ln.strip().startswith("square"))
        assert "assertions: small(record)" in line and "runs ahead" in line
        app.invoke({"qs": [8, 2]})
        assert app.run_ahead_stats()["square"]["adopted"] == 2
        assert stats(app)["square"]["small"]["checked"] == 2
    assert [f[4] for f in _flags(tmp_path / "s.sqlite")] == ['{"q": 8}']


@pytest.mark.parametrize("backend", ["stock", "alto-app", "alto-process"])
def test_a_firing_is_a_custom_callback_event(tmp_path: Path, backend: str) -> None:
    seen: list[tuple[str, Any]] = []

    class Handler(BaseCallbackHandler):
        def on_custom_event(self, name: str, data: Any, **kwargs: Any) -> None:
            seen.append((name, data))

    app = _graph().compile(
        **BACKENDS[backend], assertions=[small], flag_store=tmp_path / "f.sqlite"
    )
    try:
        app.invoke({"qs": [8, 2]}, {"callbacks": [Handler()]})
    finally:
        if backend != "stock":
            app.close()
    assert seen == [
        (
            EVENT,
            {
                "node": "square",
                "assertion": "small",
                "severity": "record",
                "message": "64 is not small",
            },
        )
    ]


# -- bad declarations ----------------------------------------------------------------------


def _sub() -> Any:
    inner = StateGraph(S)
    inner.add_node("x", lambda s: {})
    inner.add_edge(START, "x")
    g = StateGraph(S)
    g.add_node("sub", inner.compile())
    g.add_edge(START, "sub")
    return g


def _one(node: Any) -> StateGraph:
    g = StateGraph(S)
    g.add_node("n", node)
    g.add_edge(START, "n")
    return g


def _ok(i: Any, o: Any) -> bool:
    return True


@pytest.mark.parametrize(
    ("build", "declare", "error", "message"),
    [
        (_graph, lambda: [assertion("nope")(_ok)], ValueError, "node 'nope', which"),
        (_graph, lambda: [assertion("square")(lambda i: True)], TypeError, r"\(input, output\)"),
        (_graph, lambda: [assertion("square", severity="warn")(_ok)], ValueError, "got 'warn'"),
        (
            _graph,
            lambda: [assertion("square", severity="retry", max_attempts=0)(_ok)],
            ValueError,
            "max_attempts must be an integer >= 1, got 0",
        ),
        (_graph, lambda: {"other": [small]}, ValueError, "declared for node 'square'"),
        (_graph, lambda: [small, small], ValueError, "two assertions named 'small'"),
        (_graph, lambda: [_ok], TypeError, "a list holds @assertion"),
        (_graph, lambda: "small", TypeError, "assertions must be a list"),
        (_sub, lambda: {"sub": [_ok]}, ValueError, "node 'sub' is a subgraph"),
        (_graph, lambda: [assertion("square", over="items")(_ok)], ValueError, "got 'items'"),
    ],
)
@pytest.mark.parametrize("backend", ["pregel", "alto"])
def test_bad_declarations_are_refused_naming_what_is_wrong(
    tmp_path: Path, build: Any, declare: Any, error: type, message: str, backend: str
) -> None:
    with pytest.raises(error, match=message):
        build().compile(backend=backend, assertions=declare(), flag_store=tmp_path / "f")


def test_a_flag_store_without_assertions_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="flag_store is given, but no assertions"):
        _graph().compile(backend="alto", flag_store=tmp_path / "f.sqlite")


# -- the flag store ------------------------------------------------------------------------


@pytest.fixture(params=["sqlite", "postgres"])
def store_at(request: Any, tmp_path: Path) -> Any:
    """Where a fresh flag store is: a SQLite file, or a new database on the test
    PostgreSQL server, by SQLAlchemy URL."""
    if request.param == "sqlite":
        yield tmp_path / "flags.sqlite"
        return
    import uuid

    import psycopg
    from memory_harness import postgres_url

    server = postgres_url()
    name = f"flags_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(server, autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name}")
    url = server.rsplit("/", 1)[0].replace("postgresql://", "postgresql+psycopg://") + "/" + name
    yield url
    with psycopg.connect(server, autocommit=True) as conn:
        conn.execute(f"DROP DATABASE {name} WITH (FORCE)")


def test_the_store_keeps_what_thread_consistency_observed(store_at: Any) -> None:
    store = FlagStore(store_at)
    where = {"app": "chat", "assertion": "one_country", "ns": ""}
    assert store.observed(**where, thread_id="a", before=9, key="Paris") == []
    for thread, step, key, attrs in [
        ("a", 1, "Paris", "France"),
        ("a", 4, ("Rome", 1), ["Italy"]),
        ("a", 7, "Paris", "Italy"),
        ("b", 1, "Paris", "Spain"),
    ]:
        store.observe(**where, thread_id=thread, step=step, key=key, attrs=attrs)
    assert store.observed(**where, thread_id="a", before=7, key="Paris") == ['"France"']
    assert store.observed(**where, thread_id="a", before=8, key="Paris") == ['"France"', '"Italy"']
    assert store.observed(**where, thread_id="a", before=9, key=("Rome", 1)) == ['["Italy"]']
    assert store.observed(**{**where, "ns": "sub"}, thread_id="a", before=9, key="Paris") == []
    assert store.flags() == []  # observations are not flags


def test_the_store_filters_exports_and_takes_labels(store_at: Any) -> None:
    path = store_at
    app = _graph().compile(
        backend="alto", assertions=[small, is_square], flag_store=path, name="squares"
    )
    with app:
        app.invoke({"qs": [3, 8, 9]}, {"configurable": {"thread_id": "t1"}})
    store = FlagStore(path)
    assert sorted(f["input"]["q"] for f in store.flags(assertion="small")) == [8, 9]
    assert [f["severity"] for f in store.flags(node="square", severity="retry")] == ["retry"]
    assert {f["app"] for f in store.flags()} == {"squares"}
    assert {f["thread_id"] for f in store.flags()} == {"t1"}
    assert store.flags(app="another") == []
    out = io.StringIO()
    assert store.export_jsonl(out, assertion="small") == 2
    rows = [json.loads(line) for line in out.getvalue().splitlines()]
    assert sorted(r["output"]["out"][0][:2] for r in rows) == [[8, 64], [9, 81]]
    store.set_label(rows[0]["id"], {"correct": True})
    assert FlagStore(path).flags(assertion="small")[0]["label"] == {"correct": True}
    with pytest.raises(KeyError, match="no flag with id 999"):
        store.set_label(999, "x")
    with pytest.raises(ValueError, match="unknown nodes; known: app"):
        store.flags(nodes="square")


def test_a_store_that_never_flagged_writes_no_file(tmp_path: Path) -> None:
    path = tmp_path / "flags.sqlite"
    with _graph().compile(backend="alto", assertions=[small], flag_store=path) as app:
        app.invoke({"qs": [1, 2]})
    assert not path.exists() and FlagStore(path).flags() == []


def test_the_default_store_follows_alto_flags(tmp_path: Path, monkeypatch: Any) -> None:
    monkeypatch.setenv("ALTO_FLAGS", str(tmp_path / "env.sqlite"))
    app = _graph().compile(backend="pregel", assertions=[small])
    app.invoke({"qs": [8]})
    assert [f["input"] for f in FlagStore().flags()] == [{"q": 8}]


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "alto_langgraph", "flagged", *args],
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_the_flagged_command_lists_exports_and_writes_labels_back(
    tmp_path: Path, store_at: Any
) -> None:
    path = store_at
    with _graph().compile(backend="alto", assertions=[small, is_square], flag_store=path) as app:
        app.invoke({"qs": [3, 8, 9]})
    listed = _cli("--store", str(path), "--assertion", "small")
    assert listed.returncode == 0, listed.stderr
    lines = listed.stdout.splitlines()
    # (the two Sends run at once: either may be flagged first)
    assert sorted(ln.rsplit("record", 1)[1].strip() for ln in lines[1:3]) == [
        "64 is not small",
        "81 is not small",
    ]
    assert lines[-1] == f"2 flag(s) in {FlagStore(path).where}"
    exported = _cli("--store", str(path), "--jsonl", "--severity", "record")
    rows = [json.loads(line) for line in exported.stdout.splitlines()]
    assert sorted(r["input"]["q"] for r in rows) == [8, 9]
    # a person labels the export; the labels go back
    rows[0]["label"] = "fine"
    todo = tmp_path / "todo.jsonl"
    todo.write_text("".join(json.dumps(r) + "\n" for r in rows))
    back = _cli("--store", str(path), "--import-labels", str(todo))
    assert back.returncode == 0 and "wrote 1 label(s)" in back.stdout
    one = _cli("--store", str(path), "--label", str(rows[1]["id"]), '{"ok": false}')
    assert one.returncode == 0, one.stderr
    assert [f["label"] for f in FlagStore(path).flags(severity="record")] == ["fine", {"ok": False}]
    none = _cli("--store", str(path), "--node", "other")
    assert "no flags in" in none.stdout and "matching the filters" in none.stdout
    bad = _cli("--store", str(path), "--label", "999", "x")
    assert bad.returncode == 2 and "no flag with id 999" in bad.stderr
    bad_since = _cli("--store", str(path), "--since", "yesterday")
    assert bad_since.returncode == 2 and "neither an ISO date/time" in bad_since.stderr
    assert _cli("--store", str(path), "--since", "2999-01-01").stdout.startswith("no flags")


def _two_assertions_store(path: Path) -> FlagStore:
    """Flags of two assertions; "sharp" has a labelled flag that was a real error (the
    label corrects the output), "noisy" one that was a false alarm (the same output)."""
    store = FlagStore(path)
    for i in range(6):
        for name in ("sharp", "noisy"):
            store.record(node="n", assertion=name, severity="record", message="m", output=i)
    store.set_label(1, 100)  # sharp, output 0: corrected
    store.set_label(2, 0)  # noisy, output 0: it was right
    return store


def test_flagged_sample_picks_unlabelled_flags_of_the_assertions_that_found_errors(
    tmp_path: Path,
) -> None:
    path = tmp_path / "flags.sqlite"
    _two_assertions_store(path)
    picked = _cli("--store", str(path), "--sample", "3", "--jsonl")
    assert picked.returncode == 0, picked.stderr
    rows = [json.loads(line) for line in picked.stdout.splitlines()]
    assert len(rows) == 3 and all(r["label"] is None for r in rows)
    # the history favours "sharp": the batch starts there (its bound is the highest)
    assert rows[0]["assertion"] == "sharp"
    table = _cli("--store", str(path), "--sample", "2", "--strategy", "uniform", "--seed", "4")
    assert table.returncode == 0 and table.stdout.splitlines()[-1].startswith("2 flag(s)")
    bad = _cli("--store", str(path), "--sample", "0")
    assert bad.returncode == 2 and "--sample: N must be >= 1" in bad.stderr


# -- review follow-ups: states, policies, resumes, recompiles, a store that fails --------


class P(BaseModel):
    q: int
    out: Annotated[list, operator.add] = []


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_pydantic_state_is_checked_and_its_input_kept(tmp_path: Path, backend: str) -> None:
    g = StateGraph(P)
    g.add_node("double", lambda s: {"out": [s.q * 2]})
    g.add_edge(START, "double")
    big = assertion("double", name="big")(lambda i, o: o["out"][0] < 10 or f"{i.q} doubles big")
    path = tmp_path / "f.sqlite"
    app = g.compile(**BACKENDS[backend], assertions=[big], flag_store=path)
    try:
        assert app.invoke({"q": 7})["out"] == [14]
    finally:
        if backend != "stock":
            app.close()
    (flag,) = FlagStore(path).flags()
    assert flag["message"] == "7 doubles big" and flag["input"]["q"] == 7


@pytest.mark.parametrize("backend", ["stock", "alto-app"])
def test_a_fail_is_not_retried_by_the_node_s_default_retry_policy(
    tmp_path: Path, backend: str
) -> None:
    """LangGraph's default RetryPolicy retries AssertionError, which a violation is."""
    calls: list[int] = []
    g = StateGraph(S)
    g.add_node("square", lambda s: calls.append(1) or _square(s), retry_policy=RetryPolicy())
    g.add_conditional_edges(START, _fan, ["square"])
    path = tmp_path / "f.sqlite"
    app = g.compile(**BACKENDS[backend], assertions=[not_seven], flag_store=path)
    with pytest.raises(AssertionViolation):
        app.invoke({"qs": [7]})
    assert len(calls) == 1 and len(FlagStore(path).flags()) == 1


@pytest.mark.parametrize("backend", ["stock", "alto-app"])
def test_the_node_s_own_failures_do_not_spend_the_assertion_s_attempts(
    tmp_path: Path, backend: str
) -> None:
    calls: list[int] = []

    def flaky(s: dict) -> dict:
        calls.append(s["q"])
        if len(calls) <= 2:
            raise ConnectionError("the first two calls fail")
        return _square(s)

    g = StateGraph(S)
    g.add_node("square", flaky, retry_policy=RetryPolicy(initial_interval=0, max_attempts=5))
    g.add_conditional_edges(START, _fan, ["square"])
    app = g.compile(**BACKENDS[backend], assertions=[is_square], flag_store=tmp_path / "f")
    out = app.invoke({"qs": [3]})
    assert len(calls) == 4  # two ConnectionErrors, the assertion's retry, then right
    assert out["out"] == [(3, 9, ["assertion 'is_square' did not hold"])]


@pytest.mark.parametrize("backend", ["stock", "alto-app"])
def test_a_resumed_task_starts_with_no_feedback(tmp_path: Path, backend: str) -> None:
    from langgraph.checkpoint.memory import InMemorySaver

    seen: list[int] = []

    def node(s: dict) -> dict:
        seen.append(len(feedback()))
        return _square(s)

    never = assertion("square", severity="retry", name="never", max_attempts=2)(
        lambda i, o: "not yet"
    )
    g = StateGraph(S)
    g.add_node("square", node)
    g.add_conditional_edges(START, _fan, ["square"])
    app = g.compile(
        InMemorySaver(), **BACKENDS[backend], assertions=[never], flag_store=tmp_path / "f"
    )
    cfg = {"configurable": {"thread_id": "t"}}
    with pytest.raises(AssertionViolation):
        app.invoke({"qs": [2]}, cfg)
    with pytest.raises(AssertionViolation):
        app.invoke(None, cfg)  # the same task, resumed: its attempts start afresh
    assert seen == [0, 1, 0, 1]


def test_recompiling_a_stock_app_for_alto_keeps_its_assertions(tmp_path: Path) -> None:
    path = tmp_path / "f.sqlite"
    stock = _graph().compile(assertions=[small], flag_store=path)
    with alto_langgraph.compile(stock) as app:
        app.invoke({"qs": [8]})
        assert stats(app)["square"]["small"]["fired"] == 1
        # drawn as the node itself, as stock LangGraph draws it
        drawn = app.get_graph().to_json()
        plain_graph = _graph().compile().get_graph().to_json()
        assert drawn["nodes"] == plain_graph["nodes"]
    assert len(FlagStore(path).flags()) == 1


def test_a_flag_that_cannot_be_kept_warns_and_the_request_goes_on(tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    app = _graph().compile(backend="alto", assertions=[small], flag_store=blocker / "flags.sqlite")
    with app, pytest.warns(RuntimeWarning, match="could not keep a flag of assertion 'small'"):
        out = app.invoke({"qs": [8]})
    assert out["out"] == [(8, 64, [])]


def test_the_flagged_command_refuses_bad_input_and_writes_no_half_import(tmp_path: Path) -> None:
    path = tmp_path / "flags.sqlite"
    with _graph().compile(backend="alto", assertions=[small], flag_store=path) as app:
        app.invoke({"qs": [8]})
    (flag,) = FlagStore(path).flags()
    todo = tmp_path / "todo.jsonl"
    todo.write_text(
        json.dumps({"id": flag["id"], "label": "ok"}) + "\n" + json.dumps({"id": 99, "label": 1})
    )
    half = _cli("--store", str(path), "--import-labels", str(todo))
    assert half.returncode == 2 and "no flags with ids [99]" in half.stderr
    assert FlagStore(path).flags()[0]["label"] is None  # nothing written
    missing = _cli("--store", str(path), "--import-labels", str(tmp_path / "nope.jsonl"))
    assert missing.returncode == 2 and "No such file" in missing.stderr
    assert "alto-langgraph flagged" in missing.stderr  # its own usage line
    empty = _cli("--store", str(tmp_path / "none.sqlite"), "--label", "1", "x")
    assert empty.returncode == 2 and "it holds none" in empty.stderr
    assert not (tmp_path / "none.sqlite").exists()
    not_db = tmp_path / "not-a-db.sqlite"
    not_db.write_text("hello")
    broken = _cli("--store", str(not_db))
    assert broken.returncode == 2 and "Traceback" not in broken.stderr


# -- assertions in the config file's stage tables ------------------------------------------

_CHECKS = """
from alto_langgraph import assertion

def even_input(input, output):
    return input["q"] % 2 == 0 or f"{input['q']} is odd"

@assertion("square", severity="fail")
def below_hundred(input, output):
    return output["out"][0][1] < 100
"""


@pytest.fixture
def my_checks(tmp_path: Path, monkeypatch: Any) -> None:
    """``my_checks`` (``_CHECKS``) importable, as an app's own module would be."""
    (tmp_path / "my_checks.py").write_text(_CHECKS)
    monkeypatch.syspath_prepend(str(tmp_path))


@pytest.mark.usefixtures("my_checks")
def test_stage_tables_declare_assertions_by_import_path(tmp_path: Path) -> None:
    config = tmp_path / "stages.toml"
    config.write_text(
        "[stages.square]\n"
        'assertions = ["my_checks:even_input", '
        '{ check = "my_checks:below_hundred", name = "small_enough" }]\n'
    )
    path = tmp_path / "flags.sqlite"
    app = _graph().compile(backend="alto", config=str(config), flag_store=path)
    with app:
        line = next(ln for ln in str(app.plan).splitlines() if ln.strip().startswith("square"))
        assert "assertions: even_input(record), small_enough(fail)" in line
        assert app.plan.stage("square").placement == "app"  # no move to workers
        assert sorted(map(tuple, app.invoke({"qs": [1, 2]})["out"])) == [(1, 1, []), (2, 4, [])]
        with pytest.raises(AssertionViolation, match="small_enough"):
            app.invoke({"qs": [12]})
    assert [f["message"] for f in FlagStore(path).flags(assertion="even_input")] == ["1 is odd"]


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        ('"my_checks"', 'is not "module:function"'),
        ('"no_such_module:f"', "could not import 'no_such_module'"),
        ('"my_checks:nope"', "module 'my_checks' has no 'nope'"),
        ('{ check = "my_checks:even_input", severity = "loud" }', "got 'loud'"),
        ('{ check = "my_checks:even_input", when = 1 }', "unknown key"),
        ("3", "each is"),
    ],
)
@pytest.mark.usefixtures("my_checks")
def test_bad_stage_table_assertions_are_refused_naming_them(
    tmp_path: Path, entry: str, message: str
) -> None:
    config = tmp_path / "stages.toml"
    config.write_text(f"[stages.square]\nassertions = [{entry}]\n")
    with pytest.raises((ValueError, ImportError, TypeError), match=message):
        _graph().compile(backend="alto", config=str(config), flag_store=tmp_path / "f")


@pytest.mark.usefixtures("my_checks")
def test_a_declaration_for_another_node_in_a_stage_table_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="'my_checks:below_hundred' is declared for node 'square'"):
        _graph().compile(
            backend="alto",
            stages={"other": {"assertions": ["my_checks:below_hundred"]}},
            flag_store=tmp_path / "f",
        )


def test_a_subgraph_run_ahead_keeps_its_inner_retries_and_its_flags_once_adopted(
    tmp_path: Path,
) -> None:
    """The subgraph's node retries inside the subgraph's own loop (its feedback at
    once); its flags are shown when the outer loop adopts the Send that ran it."""

    class Out(TypedDict):
        out: Annotated[list, operator.add]

    inner = StateGraph(S, output_schema=Out)
    inner.add_node("square", _square)
    inner.add_conditional_edges(START, _fan, ["square"])
    results = {}
    for backend in ("stock", "alto-app"):
        path = tmp_path / f"{backend}.sqlite"
        sub = inner.compile(assertions=[is_square, small], flag_store=path)
        g = StateGraph(S)
        g.add_node("prep", lambda s: {})
        g.add_node("slow", lambda s: time.sleep(0.3) or {})
        g.add_node("sub", sub)
        g.add_edge(START, "prep")
        g.add_edge(START, "slow")
        g.add_conditional_edges(
            "prep", lambda s: [Send("sub", {"qs": [q], "out": []}) for q in s["qs"]], ["sub"]
        )
        app = g.compile(**BACKENDS[backend])
        out = app.invoke({"qs": [3, 8]})
        results[backend] = (sorted(map(tuple, out["out"])), _flags(path))
        if backend != "stock":
            assert app.run_ahead_stats()["sub"]["adopted"] == 2
            app.close()
    assert results["stock"][0] == [(3, 9, ["assertion 'is_square' did not hold"]), (8, 64, [])]
    assert [f[1] for f in results["stock"][1]] == ["is_square", "small"]
    assert results["alto-app"] == results["stock"]


@pytest.mark.parametrize("backend", ["stock", "alto-app", "alto-process"])
def test_feedback_is_the_retried_node_s_not_a_graph_s_it_runs(tmp_path: Path, backend: str) -> None:
    peek = StateGraph(S)
    peek.add_node("peek", lambda s: {"out": [len(feedback())]})
    peek.add_edge(START, "peek")
    inner = peek.compile()

    def node(s: dict) -> dict:
        said = feedback()
        seen_inside = inner.invoke({"qs": [], "out": []})["out"]
        return {"out": [(s["q"], s["q"] + (0 if said else 1), len(said), seen_inside)]}

    exact = assertion("square", severity="retry", name="exact")(
        lambda i, o: o["out"][0][1] == i["q"]
    )
    g = StateGraph(S)
    g.add_node("square", node)
    g.add_conditional_edges(START, _fan, ["square"])
    app = g.compile(**BACKENDS[backend], assertions=[exact], flag_store=tmp_path / "f")
    try:
        # the retried node saw one message; the graph it ran, none
        assert app.invoke({"qs": [5]})["out"] == [(5, 5, 1, [0])]
    finally:
        if backend != "stock":
            app.close()


@pytest.mark.usefixtures("my_checks")
def test_a_stage_table_assertion_for_a_subgraph_s_node_says_where_it_goes(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="a node of a subgraph: declare it when compiling"):
        _sub().compile(
            backend="alto",
            stages={"sub/x": {"assertions": ["my_checks:even_input"]}},
            flag_store=tmp_path / "f",
        )


def test_a_graph_with_assertions_run_by_a_node_in_a_worker_flags_from_there(
    tmp_path: Path,
) -> None:
    """The inner graph travels to the worker inside the node's code (pickled); its
    assertions keep flagging into the same SQLite file, from that process."""
    path = tmp_path / "inner.sqlite"
    inner = _graph().compile(assertions=[small], flag_store=path)

    def outer(s: dict) -> dict:
        return {"out": inner.invoke({"qs": s["qs"], "out": []})["out"]}

    g = StateGraph(S)
    g.add_node("outer", outer)
    g.add_edge(START, "outer")
    with g.compile(backend="alto", executor="process") as app:
        out = app.invoke({"qs": [8, 2]})
        worker_pid = app.deployment.pids[("outer", 0)]
    assert sorted(map(tuple, out["out"])) == [(2, 4, []), (8, 64, [])]
    (flag,) = FlagStore(path).flags()
    assert flag["message"] == "64 is not small" and worker_pid != os.getpid()
