"""Bad input a user can give alto, and the error each gets (issue 13, item 6).

Every case asserts the exception's exact type and that its message names what was
wrong: the option, the stage, the setting, the file or the value. Where stock
LangGraph has a behaviour for the same input (a bad ``invoke`` payload, a bad run
config, a graph that does not compile), alto must raise the same exception type with
the same message, or return what stock returns.

Most cases fail before any process starts; the few that need worker processes use
``executor="process"`` on one- or two-node graphs, closed with ``with ... as app``.
"""

from __future__ import annotations

import asyncio
import math
import operator
import re
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, TypedDict

import pytest
from langgraph.errors import EmptyInputError, GraphRecursionError, InvalidUpdateError
from langgraph.func import entrypoint
from langgraph.graph import START, StateGraph
from langgraph.types import Send
from pydantic import BaseModel, ValidationError

import alto_langgraph
from alto_langgraph import ShippingError, StageError


class Log(TypedDict):
    log: Annotated[list, operator.add]


def two_nodes() -> StateGraph:
    """START -> a -> b: the stages are 'a' and 'b'."""
    g = StateGraph(Log)
    g.add_node("a", lambda s: {"log": ["a"]})
    g.add_node("b", lambda s: {"log": ["b"]})
    g.add_edge(START, "a")
    g.add_edge("a", "b")
    return g


def with_subgraph() -> StateGraph:
    """One subgraph node 'sub' running 'leaf': the one stage is 'sub/leaf'."""
    inner = StateGraph(Log)
    inner.add_node("leaf", lambda s: {"log": ["leaf"]})
    inner.add_edge(START, "leaf")
    g = StateGraph(Log)
    g.add_node("sub", inner.compile())
    g.add_edge(START, "sub")
    return g


def raised(run: Callable[[], Any], error: type[BaseException], message: str) -> BaseException:
    """Run ``run``; assert it raised exactly ``error`` (not a subclass, not a parent)
    with ``message`` (a regex) in its text; return the exception."""
    with pytest.raises(BaseException) as info:
        run()
    assert type(info.value) is error, f"expected {error.__name__}, got {info.exconly()}"
    assert re.search(message, str(info.value), re.S), f"{message!r} not in {info.exconly()}"
    return info.value


class NoPick:
    """A routing policy without ``pick``."""


# -- compile options -------------------------------------------------------------------
#
# (options, exception type, what the message must say). Each fails in compile, before
# any process starts.


def param(id: str, options: dict, error: type[BaseException], message: str) -> Any:
    return pytest.param(options, error, message, id=id)


def bad(value: Any) -> str:
    """``got VALUE`` as a regex."""
    return "got " + re.escape(repr(value))


def count(value: Any) -> Any:
    """replicas={"a": value}"""
    return param(
        f"replicas-{value!r}",
        {"replicas": {"a": value}},
        ValueError,
        r"alto options: stage 'a' needs between 1 and 1024 instances, " + bad(value),
    )


def setting(key: str, value: Any, rule: str) -> Any:
    """stages={"a": {key: value}}: ValueError naming the stage, the setting, the rule
    and the value."""
    return param(
        f"{key}-{value!r}",
        {"stages": {"a": {key: value}}},
        ValueError,
        rf"alto options: stage 'a': {key} must be {rule}, " + bad(value),
    )


def lm(id: str, settings: dict, error: type[BaseException], message: str) -> Any:
    """lm={"m": settings} (the simulated engine: checked without loading anything)."""
    return param(id, {"lm": {"m": settings}}, error, r"alto option lm\['m'\]: " + message)


SIM = {"engine": "simulated"}
ONE_OF = "is not one of"
OPTION_CASES = [
    # unknown option names
    param("unknown", {"replicaz": {"a": 2}}, TypeError, r"unknown alto option\(s\): replicaz;"),
    param(
        "two-unknown",
        {"executer": "process", "stage": {}},
        TypeError,
        r"unknown alto option\(s\): executer, stage; known options are: config, executor",
    ),
    # executor, start, transport, host, run_ahead
    param("executor", {"executor": "gpu"}, ValueError, "executor='gpu' is not one of auto, proc"),
    param("executor-int", {"executor": 1}, ValueError, f"executor=1 {ONE_OF}"),
    param("executor-none", {"executor": None}, ValueError, f"executor=None {ONE_OF}"),
    param("start", {"start": "now"}, ValueError, "start='now' is not one of first_run, compile"),
    param("start-bool", {"start": True}, ValueError, f"start=True {ONE_OF}"),
    param("transport", {"transport": "udp"}, ValueError, "transport='udp' is not one of ipc, tcp"),
    param("transport-case", {"transport": "TCP"}, ValueError, f"transport='TCP' {ONE_OF}"),
    # host is checked whatever the transport: a bad value is a bad value
    param("host-int", {"host": 5}, ValueError, "option host must be a non-empty .*got 5$"),
    param("host-empty", {"host": "", "transport": "tcp"}, ValueError, "option host .*got ''$"),
    param("host-bytes", {"host": b"::1", "transport": "tcp"}, ValueError, "option host .*got b"),
    param("ray_address-int", {"ray_address": 6379}, ValueError, "ray_address must be a Ray .*6379"),
    param("ray_address-empty", {"ray_address": ""}, ValueError, "ray_address must be a Ray .*''"),
    param(
        "run_ahead-str",
        {"run_ahead": "no"},
        ValueError,
        "run_ahead must be True or False, got 'no'",
    ),
    param("run_ahead-int", {"run_ahead": 0}, ValueError, "run_ahead must be True or False, got 0"),
    param(
        "run_ahead-none", {"run_ahead": None}, ValueError, "run_ahead must be True or Fa.*got None"
    ),
    # replicas
    *map(count, [0, -1, 1_000_000, 1025, True, 2.0, "2", None]),
    param(
        "replicas-unknown-stage",
        {"replicas": {"zz": 2}},
        ValueError,
        r"no stage named 'zz' in this graph \(named in options\); its stages are: 'a', 'b'$",
    ),
    param(
        "replicas-int-stage-name",  # the names' sort failed on str < int
        {"replicas": {1: 2, "zz": 2}},
        ValueError,
        r"no stage named 'zz', 1 in this graph",
    ),
    param(
        "replicas-not-a-map",
        {"replicas": 2},
        TypeError,
        r"alto options: replicas \(\[instances\]\) must map stage names to counts, got 2$",
    ),
    param("replicas-list", {"replicas": ["a"]}, TypeError, r"replicas .*must map .*got \['a'\]"),
    # the stages table
    param(
        "stages-str", {"stages": "a"}, TypeError, "stages must map stage names to tables .*got 'a'"
    ),
    param(
        "stage-not-a-table",
        {"stages": {"a": True}},
        TypeError,
        "alto options: stage 'a' must be a table of settings, got True",
    ),
    param(
        "setting-unknown",
        {"stages": {"a": {"statefull": True}}},
        ValueError,
        r"stage 'a' has unknown setting\(s\) statefull; known: process, stateful",
    ),
    param(
        "setting-replicas",  # counts go in replicas= / [instances], not the table
        {"stages": {"a": {"replicas": 2}}},
        ValueError,
        r"stage 'a' has unknown setting\(s\) replicas",
    ),
    param(
        "stages-unknown-stage",
        {"stages": {"zz": {"stateful": True}}},
        ValueError,
        r"no stage named 'zz'.*its stages are: 'a', 'b'$",
    ),
    setting("stateful", "yes", "true or false"),
    setting("process", 1, "true or false"),
    setting("run_ahead", "no", "true or false"),
    *(setting("group_depth", v, "an integer >= 0") for v in (-1, 1.5, None)),
    *(setting("gpus", v, "an integer >= 0") for v in (-1, True, "1")),
    *(setting("threads", v, "an integer between 1 and 4096") for v in (0, 4097, 2.5)),
    *(setting("max_calls_per_instance", v, "an integer >= 1") for v in (0, "10")),
    *(setting("max_memory_mb", v, "a number > 0") for v in (0, -5, math.nan, math.inf, True)),
    *(setting("stuck_after", v, "a number >= 0") for v in (-1, math.nan, "3")),
    *(setting("max_pending", v, "an integer >= 1") for v in (0, True)),
    param(
        "policy-unknown",
        {"stages": {"a": {"policy": "random"}}},
        ValueError,
        "stage 'a': unknown routing policy 'random': expected one of consistent_hash",
    ),
    param(
        "policy-without-pick",
        {"stages": {"a": {"policy": NoPick()}}},
        TypeError,
        r"stage 'a': routing policy <.*NoPick object.*> has no pick\(key, instances, outstanding\)",
    ),
    param(
        "policy-int",
        {"stages": {"a": {"policy": 3}}},
        TypeError,
        "'a': routing policy 3 has no pick",
    ),
    # conflicting options
    param(
        "inline-with-replicas",
        {"executor": "inline", "replicas": {"a": 2}},
        ValueError,
        "replicas/stages/config place stages in worker processes, but executor='inline'",
    ),
    param(
        "inline-with-stage-table",
        {"executor": "inline", "stages": {"a": {"gpus": 1}}},
        ValueError,
        "but executor='inline' runs every node in this process",
    ),
    param(
        "process-false-with-replicas",
        {"stages": {"a": {"process": False}}, "replicas": {"a": 2}},
        ValueError,
        "stage 'a' has process=False .*but replicas=2",
    ),
    # lm= entries
    param(
        "lm-list",
        {"lm": ["m"]},
        TypeError,
        r"option lm must map model names to settings, got \['m'\]",
    ),
    param(
        "lm-entry-str",
        {"lm": {"m": "sim"}},
        TypeError,
        r"lm\['m'\] must be a dict of settings, got 'sim'",
    ),
    param(
        "lm-empty-name",
        {"lm": {"": SIM}},
        ValueError,
        "lm: model names must be non-empty strings, got ''",
    ),
    lm(
        "engine-unknown",
        {"engine": "gpt5"},
        ValueError,
        "unknown LM engine 'gpt5': expected one of transformers",
    ),
    lm("engine-none", {"engine": None}, ValueError, "unknown LM engine None"),
    *(
        lm(
            f"replicas-{v!r}",
            {**SIM, "replicas": v},
            ValueError,
            "replicas must be an integer between 1 and 1024, " + bad(v),
        )
        for v in (0, True, 2000, "2")
    ),
    *(
        lm(f"gpus-{v!r}", {**SIM, "gpus": v}, ValueError, "gpus must be an integer >= 0, " + bad(v))
        for v in (-1, 1.5)
    ),
    lm(
        "unknown-key",
        {**SIM, "bogus": 1},
        TypeError,
        "LM engine 'simulated': got an unexpected keyword argument 'bogus'; its options are:",
    ),
    lm(
        "engine-option-value",
        {**SIM, "max_context": -1},
        ValueError,
        r"SimulatedEngine\(max_context=...\) must be >= 1, got -1",
    ),
    lm(
        "policy-unknown", {**SIM, "policy": "random"}, ValueError, "unknown routing policy 'random'"
    ),
]


@pytest.mark.parametrize(("options", "error", "message"), OPTION_CASES)
def test_a_bad_compile_option_fails_naming_it(
    options: dict[str, Any], error: type[BaseException], message: str
) -> None:
    raised(lambda: two_nodes().compile(backend="alto", **options), error, message)


def test_a_tcp_host_that_cannot_be_bound_fails_in_compile_naming_it() -> None:
    # 192.0.2.1 (TEST-NET-1) is no address of this machine: bind fails with
    # EADDRNOTAVAIL, in compile with start="compile", before the router or any
    # instance is spawned
    raised(
        lambda: two_nodes().compile(
            backend="alto", executor="process", transport="tcp", host="192.0.2.1", start="compile"
        ),
        ValueError,
        r"alto option transport='tcp': cannot bind host='192\.0\.2\.1'",
    )


def test_more_gpus_than_visible_fails_naming_the_stages(monkeypatch: pytest.MonkeyPatch) -> None:
    # one GPU visible, a stage asks for two: refused before any process starts
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0")
    raised(
        lambda: two_nodes().compile(backend="alto", stages={"a": {"gpus": 2}}, start="compile"),
        ValueError,
        r"the stages ask for 2 GPUs in all \('a' 1 x 2: instances x GPUs each\), but only 1 "
        r"are visible \(0\)",
    )


# -- config files ----------------------------------------------------------------------
#
# (file contents, exception type, what the message must say besides the file's name).
# None: the file does not exist; bytes: written as they are.

IN_FILE = "config file '{path}'"
CONFIG_CASES = [
    param("missing", None, ValueError, "cannot read " + IN_FILE + ": .*No such file"),
    param(
        "invalid-toml",
        "[stages.a\nstateful = true\n",
        ValueError,
        IN_FILE + " is not valid TOML: Expected ']'",
    ),
    param("invalid-value", "stateful = \n", ValueError, IN_FILE + " is not valid TOML"),
    param(
        "not-utf8",
        b"\xff\xfe[stages.a]\n",
        ValueError,
        IN_FILE + " is not valid TOML: 'utf-8' codec",
    ),
    param(
        "unknown-table",
        "[deploy]\nworkers = 4\n",
        ValueError,
        IN_FILE + r" has unknown table\(s\) deploy; expected \[stages.NAME\] and \[instances\]",
    ),
    param(
        "top-level-key",
        "replicas = 2\n[stages.a]\n",
        ValueError,
        IN_FILE + r" has unknown table\(s\) replicas",
    ),
    param(
        "stage-not-a-table",
        "[stages]\na = 3\n",
        TypeError,
        IN_FILE + ": stage 'a' must be a table of settings, got 3",
    ),
    param(
        "stages-not-a-table",
        "stages = 3\n",
        TypeError,
        IN_FILE + ": stages must map stage names to tables of settings, got 3",
    ),
    param(
        "instances-not-a-table",
        "instances = [1, 2]\n",
        TypeError,
        IN_FILE + r": replicas \(\[instances\]\) must map stage names to counts, got \[1, 2\]",
    ),
    *(
        param(
            f"instances-{v}",
            f"[instances]\na = {v}\n",
            ValueError,
            IN_FILE + ": stage 'a' needs between 1 and 1024 instances, got " + got,
        )
        for v, got in (
            ("0", "0"),
            ("-3", "-3"),
            ("5000", "5000"),
            ('"two"', "'two'"),
            ("2.5", "2.5"),
            ("true", "True"),
        )
    ),
    param(
        "instances-unknown-stage",
        "[instances]\nzz = 2\n",
        ValueError,
        r"no stage named 'zz' in this graph \(named in "
        + IN_FILE
        + r"\); its stages are: 'a', 'b'$",
    ),
    param(
        "stages-unknown-stage",
        "[stages.zz]\nstateful = true\n",
        ValueError,
        r"no stage named 'zz' in this graph \(named in " + IN_FILE,
    ),
    param(
        "setting-unknown",
        "[stages.a]\nstatefull = true\n",
        ValueError,
        IN_FILE + r": stage 'a' has unknown setting\(s\) statefull",
    ),
    param(
        "setting-replicas",
        "[stages.a]\nreplicas = 2\n",
        ValueError,
        IN_FILE + r": stage 'a' has unknown setting\(s\) replicas",
    ),
    param(
        "stateful-str",
        '[stages.a]\nstateful = "yes"\n',
        ValueError,
        IN_FILE + ": stage 'a': stateful must be true or false, got 'yes'",
    ),
    param(
        "threads-str",
        '[stages.a]\nthreads = "8"\n',
        ValueError,
        IN_FILE + ": stage 'a': threads must be an integer between 1 and 4096, got '8'",
    ),
    param(
        "gpus-float",
        "[stages.a]\ngpus = 1.5\n",
        ValueError,
        IN_FILE + ": stage 'a': gpus must be an integer >= 0, got 1.5",
    ),
    param(
        "max_memory-nan",
        "[stages.a]\nmax_memory_mb = nan\n",
        ValueError,
        IN_FILE + ": stage 'a': max_memory_mb must be a number > 0, got nan",
    ),
    param(
        "stuck_after-minus-inf",
        "[stages.a]\nstuck_after = -inf\n",
        ValueError,
        IN_FILE + ": stage 'a': stuck_after must be a number >= 0, got -inf",
    ),
    param(
        "policy-unknown",
        '[stages.a]\npolicy = "random"\n',
        ValueError,
        IN_FILE + ": stage 'a': unknown routing policy 'random'",
    ),
    param(
        "process-false-with-instances",
        "[stages.a]\nprocess = false\n[instances]\na = 2\n",
        ValueError,
        "stage 'a' has process=False .*but replicas=2",
    ),
]


@pytest.mark.parametrize(("text", "error", "message"), CONFIG_CASES)
def test_a_bad_config_file_fails_naming_the_file_and_what_is_wrong(
    tmp_path: Path, text: str | bytes | None, error: type[BaseException], message: str
) -> None:
    path = tmp_path / "alto.toml"
    if isinstance(text, bytes):
        path.write_bytes(text)
    elif text is not None:
        path.write_text(text)
    raised(
        lambda: two_nodes().compile(backend="alto", config=path),
        error,
        message.format(path=re.escape(str(path))),
    )


@pytest.mark.parametrize(
    ("second", "message"),
    [
        pytest.param(None, r"cannot read config file '{path}'", id="missing"),
        pytest.param("[instances\n", r"config file '{path}' is not valid TOML", id="invalid"),
        pytest.param(
            "[instances]\na = -1\n",
            r"config file '{path}': stage 'a' needs .*got -1",
            id="bad-count",
        ),
        pytest.param(
            "[stages.a]\ngroup_depth = -2\n",
            r"config file '{path}': stage 'a': group_depth .*got -2",
            id="bad-setting",
        ),
        pytest.param(
            "[instances]\nzz = 2\n",
            r"no stage named 'zz' in this graph \(named in config file '{path}'\)",
            id="unknown-stage",
        ),
    ],
)
def test_in_a_list_of_config_files_the_error_names_the_bad_one(
    tmp_path: Path, second: str | None, message: str
) -> None:
    first = tmp_path / "stages.toml"
    first.write_text("[stages.a]\nstateful = true\n")
    bad = tmp_path / "instances.toml"
    if second is not None:
        bad.write_text(second)
    error = raised(
        lambda: two_nodes().compile(backend="alto", config=[first, bad]),
        ValueError,
        message.format(path=re.escape(str(bad))),
    )
    assert str(first) not in str(error)  # the good file is not blamed


def test_config_files_with_executor_inline_conflict(tmp_path: Path) -> None:
    path = tmp_path / "instances.toml"
    path.write_text("[instances]\na = 2\n")
    raised(
        lambda: two_nodes().compile(backend="alto", config=path, executor="inline"),
        ValueError,
        r"replicas/stages/config place stages in worker processes, but executor='inline'",
    )


@pytest.mark.parametrize(
    "config",
    [
        pytest.param(5, id="int"),
        pytest.param({"stages": {}}, id="dict"),
        pytest.param(b"alto.toml", id="bytes"),
        pytest.param(["stages.toml", None], id="none-in-list"),
    ],
)
def test_a_config_option_that_is_not_a_path_fails_naming_it(config: Any) -> None:
    raised(
        lambda: two_nodes().compile(backend="alto", config=config),
        TypeError,
        r"alto option config must be a TOML file path or a list of them, got "
        + re.escape(repr(config)),
    )


# -- graphs ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("graph", "got"),
    [
        pytest.param({"a": 1}, "dict", id="dict"),
        pytest.param(None, "NoneType", id="none"),
        pytest.param(StateGraph, "type", id="the-class"),
        pytest.param(lambda s: s, "function", id="function"),
        # a functional-API workflow is a Pregel, not a StateGraph: alto does not lower it
        pytest.param(entrypoint()(lambda x: x), "Pregel", id="functional-api-entrypoint"),
    ],
)
def test_compiling_what_is_not_a_graph_fails_naming_its_type(graph: Any, got: str) -> None:
    raised(
        lambda: alto_langgraph.compile(graph),
        TypeError,
        rf"alto_langgraph.compile expects a langgraph StateGraph or a compiled graph, got {got}$",
    )


def test_compiling_an_alto_graph_again_is_refused() -> None:
    app = two_nodes().compile(backend="alto")
    raised(lambda: alto_langgraph.compile(app), TypeError, r"already compiled for alto")


def test_backend_given_to_alto_compile_is_refused_naming_it() -> None:
    # it was StateGraph.compile's "got multiple values for keyword argument 'backend'"
    raised(
        lambda: alto_langgraph.compile(two_nodes(), backend="pregel"),
        TypeError,
        r"backend= is an argument of StateGraph.compile, not of alto_langgraph.compile "
        r"\(got backend='pregel'\)",
    )


def test_an_unknown_backend_is_refused_naming_it() -> None:
    raised(
        lambda: two_nodes().compile(backend="ray"),
        ValueError,
        r"unknown backend 'ray': expected one of pregel, alto",
    )


def _no_entry() -> StateGraph:
    g = StateGraph(Log)
    g.add_node("a", lambda s: {})
    return g


def _edge_to_nowhere() -> StateGraph:
    g = two_nodes()
    g.add_edge("b", "zz")
    return g


@pytest.mark.parametrize(
    ("build", "stock_args", "error", "message"),
    [
        pytest.param(_no_entry, {}, ValueError, r"Graph must have an entrypoint", id="no-entry"),
        pytest.param(
            _edge_to_nowhere,
            {},
            ValueError,
            r"edge ending at unknown node `zz`",
            id="edge-to-unknown-node",
        ),
        pytest.param(
            two_nodes,
            {"interrupt_before": ["zz"]},
            ValueError,
            r"Interrupt node `zz` not found",
            id="interrupt-unknown-node",
        ),
        pytest.param(
            two_nodes,
            {"checkpointer": 5},
            TypeError,
            r"Invalid checkpointer provided.*Received int",
            id="checkpointer-int",
        ),
    ],
)
def test_a_graph_stock_langgraph_refuses_is_refused_as_on_stock(
    build: Callable[[], StateGraph],
    stock_args: dict[str, Any],
    error: type[BaseException],
    message: str,
) -> None:
    stock = raised(lambda: build().compile(**stock_args), error, message)
    # alto options that would be valid do not change what stock says
    alto = raised(
        lambda: build().compile(backend="alto", replicas={"a": 2}, **stock_args), error, message
    )
    assert str(alto) == str(stock)


@pytest.mark.parametrize(
    ("options", "named"),
    [
        pytest.param({"replicas": {"sub": 2}}, "'sub'", id="the-subgraph-node"),
        pytest.param({"stages": {"leaf": {"threads": 2}}}, "'leaf'", id="inner-name-without-path"),
        pytest.param({"replicas": {"__start__": 2}}, "'__start__'", id="start"),
    ],
)
def test_a_stage_name_that_is_no_node_is_refused_listing_the_stages(
    options: dict[str, Any], named: str
) -> None:
    raised(
        lambda: with_subgraph().compile(backend="alto", **options),
        ValueError,
        rf"no stage named {named} in this graph \(named in options\); its stages are: 'sub/leaf'$",
    )


def _locked(in_subgraph: bool) -> StateGraph:
    lock = threading.Lock()

    def guarded(s: dict) -> dict:
        with lock:
            return {"log": ["x"]}

    g = StateGraph(Log)
    g.add_node("guarded", guarded)
    g.add_edge(START, "guarded")
    if not in_subgraph:
        return g
    outer = StateGraph(Log)
    outer.add_node("sub", g.compile())
    outer.add_edge(START, "sub")
    return outer


@pytest.mark.parametrize(
    ("in_subgraph", "options", "node"),
    [
        pytest.param(False, {"executor": "process"}, "guarded", id="executor-process"),
        pytest.param(True, {"replicas": {"sub/guarded": 2}}, "sub/guarded", id="subgraph-replicas"),
    ],
)
def test_a_node_that_cannot_be_shipped_fails_compile_naming_node_and_value(
    in_subgraph: bool, options: dict[str, Any], node: str
) -> None:
    raised(
        lambda: _locked(in_subgraph).compile(backend="alto", start="compile", **options),
        ShippingError,
        rf"the code of node '{node}' cannot be pickled .*refers to closure variable 'lock' "
        r"\(_thread\.lock\)",
    )


# -- payloads and runs -----------------------------------------------------------------
#
# (what to run on an app, what stock LangGraph raises: None if it returns). Alto must
# raise that type with stock's message, or return stock's answer.


async def _alist(chunks: Any) -> list:
    return [c async for c in chunks]


START_LOG = {"log": []}
RUN_CASES = [
    pytest.param(lambda app: app.invoke(None), EmptyInputError, id="invoke-none"),
    pytest.param(lambda app: app.invoke(42), InvalidUpdateError, id="invoke-int"),
    pytest.param(lambda app: app.invoke("hello"), InvalidUpdateError, id="invoke-str"),
    pytest.param(lambda app: app.invoke([1, 2]), InvalidUpdateError, id="invoke-list"),
    pytest.param(lambda app: asyncio.run(app.ainvoke(42)), InvalidUpdateError, id="ainvoke-int"),
    pytest.param(lambda app: app.batch([START_LOG, 42]), InvalidUpdateError, id="batch-with-int"),
    # stock ignores keys the state does not have
    pytest.param(lambda app: app.invoke({"unknown_key": 1}), None, id="invoke-unknown-key"),
    pytest.param(lambda app: app.invoke({"log": 5}), TypeError, id="invoke-value-of-wrong-type"),
    pytest.param(
        lambda app: app.invoke(START_LOG, {"recursion_limit": "x"}),
        TypeError,
        id="recursion_limit-str",
    ),
    pytest.param(
        lambda app: app.invoke(START_LOG, {"recursion_limit": 0}),
        ValueError,
        id="recursion_limit-0",
    ),
    pytest.param(
        lambda app: app.invoke(START_LOG, {"recursion_limit": -1}),
        ValueError,
        id="recursion_limit-negative",
    ),
    pytest.param(
        lambda app: app.invoke(START_LOG, {"recursion_limit": 1}),
        GraphRecursionError,
        id="recursion_limit-1",
    ),
    pytest.param(lambda app: app.invoke(START_LOG, 5), AttributeError, id="config-int"),
    pytest.param(
        lambda app: app.invoke(START_LOG, output_keys=["nope"]),
        ValueError,
        id="output_keys-unknown",
    ),
    pytest.param(
        lambda app: list(app.stream(START_LOG, stream_mode=3)), TypeError, id="stream_mode-int"
    ),
    # stock streams nothing for a stream_mode it does not know, and raises nothing
    pytest.param(
        lambda app: list(app.stream(START_LOG, stream_mode="bogus")), None, id="stream_mode-unknown"
    ),
    pytest.param(
        lambda app: list(app.stream(START_LOG, stream_mode=["values", "bogus"])),
        None,
        id="stream_mode-one-unknown",
    ),
    pytest.param(
        lambda app: asyncio.run(_alist(app.astream(START_LOG, stream_mode="bogus"))),
        None,
        id="astream-stream_mode-unknown",
    ),
]


def _outcome(run: Callable[[Any], Any], app: Any) -> tuple[type[BaseException] | None, Any]:
    try:
        return None, run(app)
    except Exception as exc:  # noqa: BLE001 - the outcome is what is compared
        return type(exc), str(exc)


@pytest.mark.parametrize("executor", ["auto", "inline"])
@pytest.mark.parametrize(("run", "stock_error"), RUN_CASES)
def test_a_bad_payload_or_run_config_fails_as_on_stock(
    run: Callable[[Any], Any], stock_error: type[BaseException] | None, executor: str
) -> None:
    stock = _outcome(run, two_nodes().compile())
    assert stock[0] is stock_error, f"stock LangGraph changed: {stock}"
    assert _outcome(run, two_nodes().compile(backend="alto", executor=executor)) == stock


def test_bad_payloads_fail_as_on_stock_under_executor_process() -> None:
    """The same cases with every node in a worker process (one deployment for all)."""
    stock = two_nodes().compile()
    with two_nodes().compile(backend="alto", executor="process") as app:
        for case in RUN_CASES:
            run, stock_error = case.values
            expected = _outcome(run, stock)
            assert expected[0] is stock_error, case.id
            assert _outcome(run, app) == expected, case.id
        assert app.invoke(START_LOG) == {"log": ["a", "b"]}  # still serving


class Typed(BaseModel):
    n: int
    log: Annotated[list, operator.add] = []


@pytest.mark.parametrize("payload", [{"n": "x"}, {}], ids=["wrong-type", "missing-field"])
def test_a_payload_a_pydantic_state_refuses_fails_as_on_stock(payload: dict) -> None:
    g = StateGraph(Typed)
    g.add_node("a", lambda s: {"log": [s.n]})
    g.add_edge(START, "a")
    stock = raised(
        lambda: g.compile().invoke(payload), ValidationError, r"validation error for Typed\nn\n"
    )
    alto = raised(
        lambda: g.compile(backend="alto").invoke(payload), ValidationError, r"for Typed\nn\n"
    )
    assert str(alto) == str(stock)


class Handle(TypedDict):
    handle: Any
    log: Annotated[list, operator.add]


class _Unpicklable(Exception):
    def __init__(self) -> None:
        super().__init__("boom")
        self.lock = threading.Lock()


def _raise_unpicklable(s: dict) -> dict:
    raise _Unpicklable()


def test_values_that_cannot_cross_to_a_worker_fail_the_run_naming_node_and_value() -> None:
    """An input, a Send's argument and an output that do not pickle, and an exception
    that does not: each fails its run only, naming the node and the value."""
    g = StateGraph(Handle)
    g.add_node("use", lambda s: {"log": ["used"]})
    g.add_node("each", lambda p: {"log": ["each"]})
    g.add_node("leak", lambda s: {"handle": threading.Lock(), "log": ["leak"]})
    g.add_node("fail", _raise_unpicklable)

    def route(s: dict) -> Any:
        match s["handle"]:
            case "send":
                return [Send("each", {"lock": threading.Lock()})]
            case "leak" | "fail":
                return s["handle"]
        return []

    g.add_edge(START, "use")
    g.add_conditional_edges("use", route, ["each", "leak", "fail"])
    with g.compile(backend="alto", executor="process") as app:
        raised(
            lambda: app.invoke({"handle": threading.Lock(), "log": []}),
            ShippingError,
            r"the input of node 'use' cannot be pickled .*\['handle'\] is a _thread\.lock",
        )
        raised(
            lambda: asyncio.run(app.ainvoke({"handle": (i for i in ()), "log": []})),
            ShippingError,
            r"the input of node 'use' cannot be pickled .*\['handle'\] is a generator",
        )
        raised(
            lambda: app.invoke({"handle": "send", "log": []}),
            ShippingError,
            r"the input of node 'each' cannot be pickled .*\['lock'\] is a _thread\.lock",
        )
        raised(
            lambda: app.invoke({"handle": "leak", "log": []}),
            ShippingError,
            r"the output of node 'leak' cannot be pickled .*\['handle'\] is a _thread\.lock",
        )
        error = raised(
            lambda: app.invoke({"handle": "fail", "log": []}),
            StageError,
            r"^_Unpicklable: boom \(raised in a stage instance",
        )
        assert error.type_name == "_Unpicklable"
        assert "_raise_unpicklable" in error.remote_traceback
        assert app.invoke({"handle": 1, "log": []}) == {"handle": 1, "log": ["used"]}
