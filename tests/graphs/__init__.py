"""The conformance catalogue: graphs that must give LangGraph's answers on alto.

Each case builds a fresh ``StateGraph`` (fresh closures, so side-effect counters start
at zero) and returns it with its input. ``CASES`` maps a case name to a ``Case``.
Delays are small and anti-correlated on purpose: completion order differs from
task-path order, so an implementation that folds writes in completion order fails.

The cases live in one module per topic (``TOPICS``, in catalogue order); importing a
topic registers its cases in ``CASES`` through the ``@case`` decorator of ``_common``.
"""

import importlib

from ._common import CASES, Case

__all__ = ["CASES", "TOPICS", "Case"]

TOPICS = (
    "edges",
    "conditional",
    "send",
    "command",
    "channels",
    "defer",
    "schemas",
    "subgraphs",
    "errors",
    "limits",
    "config",
    "streams",
    "functional",
)

for _topic in TOPICS:
    importlib.import_module(f"{__name__}.{_topic}")
