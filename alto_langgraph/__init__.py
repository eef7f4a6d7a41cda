"""alto_langgraph: run LangGraph ``StateGraph`` apps as a streaming dataflow.

    import alto_langgraph
    app = builder.compile(backend="alto")     # same answers as builder.compile(), sooner
    app.explain()                             # the lowered dataflow plan

``@streaming`` and ``@fold`` nodes (``streams.py``) and the operators of
``alto_langgraph.aggregate`` opt into partial-output streaming; they run unchanged,
with the same answers, on stock LangGraph.

Importing the package makes ``StateGraph.compile`` accept ``backend=``;
``alto_langgraph.compile(graph)`` does the same without that patch. It changes nothing
else in the process (no environment variables), and imports ``alto_langgraph.lm``
(language models) only for an app that serves one. Every exception alto raises of its
own is an ``AltoError``.
"""

from . import aggregate, assertions
from ._plug import compile, install, uninstall
from .assertions import Assertion, assertion, consistency
from .compiler import Plan
from .errors import (
    AltoError,
    AltoFallbackWarning,
    AssertionCheckError,
    AssertionViolation,
    DeploymentError,
    EngineError,
    RoutingError,
    ShippingError,
    StageError,
    StageInstanceLost,
    StageOverloaded,
)
from .flagstore import FlagStore
from .graph import AltoCompiledStateGraph
from .options import AltoOptions
from .streams import StreamRef, fold, streaming

__version__ = "0.1.0"
__all__ = [
    "AltoCompiledStateGraph",
    "AltoError",
    "AltoFallbackWarning",
    "AltoOptions",
    "Assertion",
    "AssertionCheckError",
    "AssertionViolation",
    "DeploymentError",
    "EngineError",
    "FlagStore",
    "Plan",
    "RoutingError",
    "ShippingError",
    "StageError",
    "StageInstanceLost",
    "StageOverloaded",
    "StreamRef",
    "aggregate",
    "assertion",
    "assertions",
    "compile",
    "consistency",
    "fold",
    "install",
    "streaming",
    "uninstall",
]

install()
