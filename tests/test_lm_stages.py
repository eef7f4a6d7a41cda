"""LM stages: ``ChatAlto`` calls made by nodes run on the app's LM stage instances
(through the router, prompt-aware), give the answers stock LangGraph gets with the
same model in-process, stream their tokens into ``stream_mode="messages"``, and fail
clearly on bad input. Most tests use the simulated engine (fast, seeded text); one runs
the real SmolLM2 on both backends."""

from __future__ import annotations

import asyncio
import operator
from contextlib import aclosing
from functools import partial
from typing import Annotated, Any, TypedDict

import pytest
from langchain_core.messages import (
    AIMessage,
    AIMessageChunk,
    ChatMessage,
    HumanMessage,
    HumanMessageChunk,
    SystemMessage,
)
from langchain_core.runnables import RunnableConfig
from langgraph.graph import END, START, StateGraph
from langgraph.types import Send

import alto_langgraph  # noqa: F401  (the backend="alto" plug)
from alto_langgraph import streaming
from alto_langgraph.errors import DeploymentError
from alto_langgraph.lm import ChatAlto, Timing

FAST = Timing(step_base=0.001, step_per_request=0.0, prefill_per_token=0.0, block_size=4)
SIM = {"engine": "simulated", "timing": FAST, "seed": 3}
QUESTIONS = ["Where is the Eiffel Tower?", "How big is the Amazon?", "When does water boil?"]
SYSTEM = "You are a careful assistant who answers in one short sentence. " * 3


class S(TypedDict):
    qs: list[str]
    answers: Annotated[list, operator.add]


def sim_llm(**kw: Any) -> ChatAlto:
    """The simulated model, served in-process under stock LangGraph."""
    return ChatAlto(
        model="sim", engine="simulated", engine_options={"timing": FAST, "seed": 3}, **kw
    )


def fan_out_graph(llm: ChatAlto, *, use_async: bool = False) -> StateGraph:
    def fan(s: S) -> list[Send]:
        return [Send("ask", {"q": q}) for q in s["qs"]]

    def prompt(q: str) -> list:
        return [SystemMessage(SYSTEM), HumanMessage(q)]

    def ask(s: dict) -> dict:
        return {"answers": [(s["q"], llm.invoke(prompt(s["q"])).content)]}

    async def aask(s: dict) -> dict:
        return {"answers": [(s["q"], (await llm.ainvoke(prompt(s["q"]))).content)]}

    b = StateGraph(S)
    b.add_node("ask", aask if use_async else ask)
    b.add_conditional_edges(START, fan)
    b.add_edge("ask", END)
    return b


@pytest.mark.parametrize("executor", ["process", "inline"])
@pytest.mark.parametrize("use_async", [False, True])
def test_answers_match_stock_langgraph_with_the_model_in_process(
    executor: str, use_async: bool
) -> None:
    builder = fan_out_graph(sim_llm(max_tokens=12), use_async=use_async)

    def run(app: Any) -> Any:
        if use_async:
            return asyncio.run(app.ainvoke({"qs": QUESTIONS}))
        return app.invoke({"qs": QUESTIONS})

    stock = run(builder.compile())
    with builder.compile(
        backend="alto", executor=executor, lm={"sim": {**SIM, "replicas": 2}}
    ) as app:
        out = run(app)
        assert set(app.deployment.specs) >= {"lm:sim"}
        served = app.deployment.stats()["outstanding"]
    assert sorted(out["answers"]) == sorted(stock["answers"])
    assert all(len(a.split()) == 12 for _, a in out["answers"])  # max_tokens reached them
    # the LM calls went to the stage's instances (the shared system prompt keeps them
    # on one: prefix-cache-aware routing), and all came back
    assert any(inst.startswith("lm:sim#") for inst in served) and not any(served.values())


def test_prompts_sharing_a_prefix_go_where_that_prefix_is_cached() -> None:
    """Two calls that share a long system prompt: prefix-cache-aware routing sends the
    second to the instance that cached the prefix (the engine reports cached prompt
    tokens); round-robin sends it to the other instance, which has nothing cached."""
    llm = sim_llm(max_tokens=4)

    def ask(s: dict) -> dict:
        out = []
        for q in s["qs"]:  # one after another
            msg = llm.invoke([SystemMessage(SYSTEM), HumanMessage(q)])
            out.append((q, msg.response_metadata["cached_tokens"]))
        return {"answers": out}

    builder = StateGraph(S)
    builder.add_node("ask", ask)
    builder.add_edge(START, "ask")
    cached = {}
    for policy in ("prefix_cache_aware", "round_robin"):
        lm = {"sim": {**SIM, "replicas": 2, "policy": policy}}
        with builder.compile(backend="alto", executor="process", lm=lm) as app:
            cached[policy] = [c for _, c in app.invoke({"qs": QUESTIONS[:2]})["answers"]]
    assert cached["prefix_cache_aware"][0] == 0 and cached["prefix_cache_aware"][1] >= 16
    assert cached["round_robin"] == [0, 0]


def test_tokens_stream_into_the_messages_mode_as_on_stock_langgraph() -> None:
    builder = fan_out_graph(sim_llm(max_tokens=6))

    def tokens(app: Any) -> dict[str, list[str]]:
        out: dict[str, list[str]] = {}
        for chunk, meta in app.stream({"qs": QUESTIONS[:2]}, stream_mode="messages"):
            assert meta["langgraph_node"] == "ask"
            out.setdefault(chunk.id, []).append(chunk.content)
        return out

    stock = tokens(builder.compile())
    with builder.compile(backend="alto", executor="process", lm={"sim": SIM}) as app:
        alto = tokens(app)
    assert len(alto) == 2 and all(len(t) >= 6 for t in alto.values())
    assert sorted("".join(t) for t in alto.values()) == sorted("".join(t) for t in stock.values())


def test_a_failed_generation_fails_its_request_only() -> None:
    """A prompt over the engine's context length fails its request with the engine's
    ValueError; the other requests, before and after, are answered."""
    builder = fan_out_graph(sim_llm(max_tokens=4))
    lm = {"sim": {**SIM, "max_context": 80}}
    with builder.compile(backend="alto", executor="process", lm=lm) as app:
        results = app.batch(
            [{"qs": ["short?"]}, {"qs": ["long " * 60]}, {"qs": ["short again?"]}],
            return_exceptions=True,
        )
        after = app.invoke({"qs": ["still there?"]})
    assert isinstance(results[1], ValueError) and "exceeds the context length" in str(results[1])
    assert len(results[0]["answers"]) == 1 and len(results[2]["answers"]) == 1
    assert len(after["answers"]) == 1


def test_a_model_the_app_does_not_serve_is_named_in_the_error() -> None:
    builder = fan_out_graph(ChatAlto(model="other"))
    with builder.compile(backend="alto", executor="process", lm={"sim": SIM}) as app:
        with pytest.raises(
            ValueError, match="model 'other' is not served by this app; it serves 'sim'"
        ):
            app.invoke({"qs": ["hi"]})


def test_an_empty_prompt_is_refused() -> None:
    with pytest.raises(ValueError, match="the prompt is empty"):
        sim_llm().invoke([HumanMessage("   ")])


@pytest.mark.parametrize(
    ("lm", "error", "match"),
    [
        ({"m": {"engine": "gpt"}}, ValueError, "unknown LM engine 'gpt'"),
        ({"m": {"engine": "simulated", "batch": 3}}, TypeError, "its options are: timing"),
        ({"gpt-17": {}}, ValueError, "unknown model 'gpt-17'"),
        (
            {"m": {**SIM, "replicas": 0}},
            ValueError,
            "replicas must be an integer between 1 and 1024",
        ),
        ({"m": {**SIM, "policy": "fastest"}}, ValueError, "unknown routing policy 'fastest'"),
        (["m"], TypeError, "lm must map model names to settings"),
    ],
)
def test_bad_lm_settings_fail_at_compile_time(lm: Any, error: type, match: str) -> None:
    with pytest.raises(error, match=match):
        fan_out_graph(sim_llm()).compile(backend="alto", executor="process", lm=lm)


def test_an_engine_that_fails_to_load_fails_the_deployment_with_its_reason() -> None:
    lm = {
        "tiny": {"model": "random", "random_config": {"hidden_size": 64, "num_attention_heads": 5}}
    }
    app = fan_out_graph(ChatAlto(model="tiny")).compile(backend="alto", executor="process", lm=lm)
    with (
        app,
        pytest.raises(
            DeploymentError,
            match=r"(?s)stage .lm:tiny.: its code could not be loaded.*attention heads \(5\)",
        ),
    ):
        app.invoke({"qs": ["hi"]})


def test_smollm2_gives_the_same_answers_on_an_lm_stage_as_in_process() -> None:
    """The real model: greedy answers of stock LangGraph (engine in this process) and of
    alto (2 LM instances, calls from a worker process) are the same text."""
    builder = fan_out_graph(ChatAlto(max_tokens=10))
    questions = ["What is the capital of France?", "What is 2+2?", "Name a planet."]
    stock = builder.compile().invoke({"qs": questions})
    lm = {"smollm2-135m": {"replicas": 2}}  # the two instances split the cores
    with builder.compile(backend="alto", executor="process", lm=lm) as app:
        out = app.invoke({"qs": questions})
    assert sorted(out["answers"]) == sorted(stock["answers"])
    assert "Paris" in dict(out["answers"])["What is the capital of France?"]


@pytest.mark.parametrize("engine", ["vllm", "sglang"])
def test_an_engine_whose_package_is_missing_names_the_extra_at_compile(engine: str) -> None:
    """vLLM and SGLang need a GPU and are not installed here: compile says what to do."""
    with pytest.raises(ImportError, match=rf"needs {engine}.*alto-langgraph\[{engine}\]"):
        fan_out_graph(ChatAlto(model="m")).compile(
            backend="alto", executor="process", lm={"m": {"engine": engine}}
        )


def test_explain_lists_the_lm_stages() -> None:
    lm = {"sim": {**SIM, "replicas": 2}, "rr": {**SIM, "policy": "round_robin"}}
    app = fan_out_graph(sim_llm()).compile(backend="alto", executor="process", lm=lm)
    with app:
        text = str(app.plan)
    assert "LM stages (ChatAlto calls, through the router):" in text
    assert "lm:sim: simulated engine, routing=prefix_cache_aware x2" in text
    assert "lm:rr: simulated engine, routing=round_robin x1" in text


def test_a_call_left_early_frees_its_place_in_the_lm_stage() -> None:
    """The LM stage's engine has one batch slot and the first call would take 200 s:
    the node stops reading after two tokens, which cancels the call and aborts the
    request in the engine, so the next request gets the slot (without the abort it would
    wait past the test's timeout)."""
    long = {"timing": Timing(step_base=0.01, max_batch=1), "texts": ["word " * 20000]}
    long["max_context"] = 30000
    llm = ChatAlto(model="one", max_tokens=20000)

    async def ask(s: dict) -> dict:
        tokens = []
        async with aclosing(llm.astream(s["q"])) as chunks:
            async for chunk in chunks:
                tokens.append(chunk.content)
                if len(tokens) == 2:
                    break
        return {"answers": [(s["q"], "".join(tokens))]}

    builder = StateGraph(S)
    builder.add_node("ask", ask)
    builder.add_conditional_edges(START, lambda s: [Send("ask", {"q": q}) for q in s["qs"]])
    with builder.compile(
        backend="alto", executor="process", lm={"one": {"engine": "simulated", **long}}
    ) as app:
        first = asyncio.run(app.ainvoke({"qs": ["first"]}))
        second = asyncio.run(app.ainvoke({"qs": ["second"]}))
    assert first["answers"] == [("first", "word word")]
    assert second["answers"] == [("second", "word word")]


class Checked(TypedDict, total=False):
    question: str
    claims: Annotated[list, operator.add]
    checked: Annotated[list, operator.add]


def test_a_streaming_node_turns_an_lm_token_stream_into_claims_as_they_come() -> None:
    """A ``@streaming`` node reads the model's tokens and yields a claim (and a Send to
    check it) at every full stop: on alto each check starts while the model is still
    generating, on stock LangGraph after it; the final state is the same."""
    llm = sim_llm(max_tokens=40)
    order: list[str] = []

    @streaming
    async def extract(s: Checked) -> Any:
        sentence = ""
        async for chunk in llm.astream(s["question"]):
            sentence += chunk.content
            if sentence.rstrip().endswith("."):
                claim = sentence.strip()
                sentence = ""
                yield {"claims": [claim]}
                yield Send("check", {"claim": claim})
        order.append("generated")

    async def check(p: dict) -> dict:
        order.append("checked")
        return {"checked": [(p["claim"], len(p["claim"].split()))]}

    builder = StateGraph(Checked)
    builder.add_node("extract", extract)
    builder.add_node("check", check)
    builder.add_edge(START, "extract")
    question = {"question": "Tell me about the Eiffel Tower."}
    stock = asyncio.run(builder.compile().ainvoke(question))
    order.clear()
    with builder.compile(backend="alto", executor="inline", lm={"sim": SIM}) as app:
        out = asyncio.run(app.ainvoke(question))
    assert len(stock["claims"]) >= 2
    assert out["claims"] == stock["claims"]
    assert sorted(out["checked"]) == sorted(stock["checked"])
    assert order.index("checked") < order.index("generated")  # checks ran mid-generation


def test_a_call_given_its_config_explicitly_goes_to_the_lm_stage() -> None:
    """A node that calls the model on a thread of its own (which does not inherit the
    run's context) but passes the run's config reaches the app's LM stage: "sim" exists
    only there (in this process it is an unknown transformers model)."""
    llm = ChatAlto(model="sim", max_tokens=4)

    async def ask(s: dict, config: RunnableConfig) -> dict:
        loop = asyncio.get_running_loop()
        msg = await loop.run_in_executor(None, partial(llm.invoke, s["q"], config))
        return {"answers": [(s["q"], msg.content)]}

    builder = StateGraph(S)
    builder.add_node("ask", ask)
    builder.add_conditional_edges(START, lambda s: [Send("ask", {"q": q}) for q in s["qs"]])
    with builder.compile(backend="alto", executor="inline", lm={"sim": SIM}) as app:
        out = asyncio.run(app.ainvoke({"qs": ["Where is the Eiffel Tower?"]}))
    assert len(out["answers"][0][1].split()) == 4


def test_chat_messages_keep_their_roles_and_nothing_is_dropped_silently() -> None:
    llm = sim_llm(max_tokens=3)
    chat = [
        SystemMessage("s"),
        ChatMessage(role="user", content="c"),
        AIMessageChunk(content=[{"type": "text", "text": "a"}]),
        HumanMessageChunk(content="h"),
    ]
    request = llm._request(chat, None, {})
    assert request.messages == (("system", "s"), ("user", "c"), ("assistant", "a"), ("user", "h"))
    assert llm._request([HumanMessage("x")], "Tower", {}).params.stop == ("Tower",)
    image = HumanMessage(content=[{"type": "image_url", "image_url": {"url": "x"}}])
    with pytest.raises(ValueError, match="content must be text; got a 'image_url' block"):
        llm.invoke([image])
    call = AIMessage("", tool_calls=[{"name": "f", "args": {}, "id": "1"}])
    with pytest.raises(ValueError, match="tool calls are not supported"):
        llm.invoke([HumanMessage("x"), call])


def test_replicas_and_stages_options_may_name_an_lm_stage() -> None:
    app = fan_out_graph(sim_llm()).compile(
        backend="alto",
        executor="process",
        lm={"sim": SIM},
        replicas={"lm:sim": 3},
        stages={"lm:sim": {"gpus": 0}},
    )
    with app:
        assert app.deployment.specs["lm:sim"].replicas == 3
        assert "lm:sim: simulated engine, routing=prefix_cache_aware x3" in str(app.plan)


def test_a_run_that_falls_back_to_stock_langgraph_still_uses_the_lm_stages() -> None:
    """A run that falls back (a node on a worker invokes a graph, with a checkpointer)
    runs node code in this process; its ChatAlto calls still reach the app's LM stage
    ("sim" exists only there)."""
    from langgraph.checkpoint.memory import InMemorySaver

    builder = fan_out_graph(ChatAlto(model="sim", max_tokens=3), use_async=True)
    inner = builder.compile()
    outer = StateGraph(S)

    async def ask(s: dict) -> dict:
        return await inner.ainvoke(s)

    outer.add_node("ask", ask)
    outer.add_edge(START, "ask")
    app = outer.compile(
        backend="alto", executor="process", lm={"sim": SIM}, checkpointer=InMemorySaver()
    )
    config = {"configurable": {"thread_id": "t"}}
    with app, pytest.warns(alto_langgraph.AltoFallbackWarning, match="invokes a graph"):
        out = asyncio.run(app.ainvoke({"qs": QUESTIONS[:2]}, config))
    assert sorted(len(a.split()) for _, a in out["answers"]) == [3, 3]


def test_a_stream_given_a_config_does_not_route_other_calls() -> None:
    """The routes a config names apply to the call it was given to: while that stream
    is open, and after it was left, a call without the config runs locally (where
    "sim" is an unknown transformers model)."""
    from alto_langgraph.config_keys import CONFIG_KEY_LM
    from alto_langgraph.lm.client import LMRoutes
    from alto_langgraph.lm.models import ModelNotFound

    llm = ChatAlto(model="sim", max_tokens=20)
    with fan_out_graph(llm).compile(backend="alto", executor="process", lm={"sim": SIM}) as app:
        app.deployment.start()
        config = {"configurable": {CONFIG_KEY_LM: LMRoutes(app.deployment, {"sim": "lm:sim"})}}
        chunks = llm.stream("Where is the Eiffel Tower?", config)
        assert next(chunks).content
        with pytest.raises(ModelNotFound):
            llm.invoke("hi")
        chunks.close()

        async def left_early() -> None:
            async for _ in llm.astream("Where is the Eiffel Tower?", config):
                break
            with pytest.raises(ModelNotFound):
                await llm.ainvoke("hi")

        asyncio.run(left_early())


def test_a_killed_lm_instance_fails_its_request_and_the_next_is_answered() -> None:
    """An LM instance that dies mid-generation fails the request waiting on it with
    StageInstanceLost naming the instance (a ConnectionError: a RetryPolicy retries
    it); the supervisor restarts the instance and the next request is answered."""
    import os
    import signal
    import threading
    import time

    from alto_langgraph.errors import StageInstanceLost

    slow = {"engine": "simulated", "timing": Timing(step_base=0.05), "texts": ["word " * 2000]}
    slow["max_context"] = 5000
    llm = ChatAlto(model="slow")

    def ask(s: dict) -> dict:  # s["q"] is the number of tokens to ask for
        return {"answers": [(s["q"], llm.invoke("go", max_tokens=s["q"]).content)]}

    builder = StateGraph(S)
    builder.add_node("ask", ask)
    builder.add_conditional_edges(START, lambda s: [Send("ask", {"q": q}) for q in s["qs"]])
    with builder.compile(
        backend="alto", executor="process", lm={"slow": slow}, start="compile"
    ) as app:
        victim = app.deployment.pids[("lm:slow", 0)]
        threading.Timer(0.5, os.kill, (victim, signal.SIGKILL)).start()
        lost = r"lm:slow#0 \(pid \d+\) was killed by signal 9"
        with pytest.raises(StageInstanceLost, match=lost):
            app.invoke({"qs": [2000]})  # 100 s of steps
        deadline = time.monotonic() + 10
        while (
            app.deployment.pids.get(("lm:slow", 0)) in (victim, None)
            and time.monotonic() < deadline
        ):
            time.sleep(0.02)
        assert app.deployment.pids.get(("lm:slow", 0)) not in (victim, None)
        assert app.invoke({"qs": [3]})["answers"] == [(3, "word word word")]
