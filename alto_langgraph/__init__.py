"""alto_langgraph: run LangGraph ``StateGraph`` apps as a streaming dataflow.

    import alto_langgraph
    app = builder.compile(backend="alto")     # same answers as builder.compile(), sooner
    app.explain()                             # the lowered dataflow plan

``@streaming`` and ``@fold`` nodes (``streams.py``) and the operators of
``alto_langgraph.aggregate`` opt into partial-output streaming; they run unchanged,
with the same answers, on stock LangGraph.

Importing the package makes ``StateGraph.compile`` accept ``backend=``;
``alto_langgraph.compile(graph)`` does the same without that patch.
"""

from . import aggregate
from ._plug import compile, install, uninstall
from .compiler import Plan
from .graph import AltoCompiledStateGraph, AltoFallbackWarning
from .options import AltoOptions
from .streams import StreamRef, fold, streaming

__version__ = "0.1.0"
__all__ = [
    "AltoCompiledStateGraph",
    "AltoFallbackWarning",
    "AltoOptions",
    "Plan",
    "StreamRef",
    "aggregate",
    "compile",
    "fold",
    "install",
    "streaming",
    "uninstall",
]

install()
