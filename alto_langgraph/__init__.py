"""alto_langgraph: run LangGraph ``StateGraph`` apps as a streaming dataflow.

    import alto_langgraph
    app = builder.compile(backend="alto")     # same answers as builder.compile(), sooner
    app.explain()                             # the lowered dataflow plan

Importing the package makes ``StateGraph.compile`` accept ``backend=``;
``alto_langgraph.compile(graph)`` does the same without that patch.
"""

from ._plug import compile, install, uninstall
from .compiler import Plan
from .graph import AltoCompiledStateGraph, AltoFallbackWarning
from .options import AltoOptions

__version__ = "0.1.0"
__all__ = [
    "AltoCompiledStateGraph",
    "AltoFallbackWarning",
    "AltoOptions",
    "Plan",
    "compile",
    "install",
    "uninstall",
]

install()
