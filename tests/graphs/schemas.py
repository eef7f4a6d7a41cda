"""State schemas: pydantic, dataclass, input/output and private node inputs."""

import dataclasses
import operator
from typing import Annotated

from langgraph.graph import START, StateGraph
from pydantic import BaseModel
from typing_extensions import TypedDict

from ._common import case


@case()
def pydantic_state():
    class S(BaseModel):
        n: int = 0
        log: Annotated[list, operator.add] = []

    g = StateGraph(S)
    g.add_node("a", lambda s: {"n": s.n + 1, "log": ["a"]})
    g.add_node("b", lambda s: {"n": s.n * 3, "log": ["b"]})
    g.add_edge(START, "a")
    g.add_edge("a", "b")
    return g, {"n": 2}


@case()
def dataclass_state():
    @dataclasses.dataclass
    class S:
        n: int
        log: Annotated[list, operator.add] = dataclasses.field(default_factory=list)

    g = StateGraph(S)
    g.add_node("a", lambda s: {"n": s.n + 5, "log": [s.n]})
    g.add_edge(START, "a")
    return g, {"n": 1}


@case()
def input_output_schemas():
    class In(TypedDict):
        question: str

    class Out(TypedDict):
        answer: str

    class S(In, Out):
        notes: Annotated[list, operator.add]

    g = StateGraph(S, input_schema=In, output_schema=Out)
    g.add_node("think", lambda s: {"notes": [s["question"].upper()]})
    g.add_node("answer", lambda s: {"answer": " ".join(s["notes"])})
    g.add_edge(START, "think")
    g.add_edge("think", "answer")
    return g, {"question": "why"}


@case()
def private_node_input_schema():
    class S(TypedDict):
        log: Annotated[list, operator.add]

    class Private(TypedDict):
        secret: str

    def a(s: S) -> Private:
        return {"secret": "s3"}

    def b(p: Private) -> dict:
        return {"log": [p["secret"]]}

    g = StateGraph(S)
    g.add_node("a", a)
    g.add_node("b", b, input_schema=Private)
    g.add_edge(START, "a")
    g.add_edge("a", "b")
    return g, {"log": []}
