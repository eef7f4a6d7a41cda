"""The keys alto sets in a run's ``configurable``, in one place.

Keys that start with ``__pregel_`` are internal to LangGraph's naming scheme: LangGraph
strips them from every config it hands out (checkpoint configs in debug streams), so
alto's own bookkeeping never shows up there.
"""

from __future__ import annotations

#: One fan-out an item descends from: (the node that sent it, its index among that
#: sender's Sends). A request's root item has no frames.
Frame = tuple[str, int]

#: a task's ancestry (a tuple of ``Frame``), for graphs run inside the node (a
#: subgraph's items descend from the item that invoked it)
CONFIG_KEY_ANCESTRY = "__alto_ancestry"
#: the request id every task of a request carries (routing keys of stateful stages)
CONFIG_KEY_REQUEST = "__pregel_alto_request"
#: set on runs that fall back to stock LangGraph: node code runs in the app process
CONFIG_KEY_IN_PROCESS = "__pregel_alto_in_process"
#: the app's LM stages (``lm.client.LMRoutes``): where ``ChatAlto`` calls go
CONFIG_KEY_LM = "__pregel_alto_lm"
#: a streaming node's sink (``streams.py``): where its yielded items are applied
CONFIG_KEY_YIELD = "__alto_yield"
#: a run-ahead twin's: (its task id, effects): what its node's code (or a graph run in
#: it) does only if the loop adopts the twin's result, as callables ``effect(task_id,
#: config)`` of the loop's task, such as keeping what model assertions flagged; a twin
#: that misses or is dropped does none
CONFIG_KEY_ON_ADOPT = "__alto_on_adopt"
