"""Model assertions: checks over a node's input and output that flag likely errors.

After Kang et al., "Model Assertions for Monitoring and Improving ML Models" (MLSys
2020). An assertion is a function ``check(input, output)`` over what a node was given
and what it returned (its state update, ``Command``, ...). It *holds* when it returns
True or None; it *fires* when it returns False, or a message (a string) saying what is
wrong, or raises ``AssertionError`` (whose text is the message). Each has a severity:

* ``record``: the firing is kept in the flag store (``flagstore.py``), the run goes on;
* ``retry``: kept, and the node runs again under LangGraph's retry accounting (its
  ``RetryPolicy``: one that retries ``AssertionViolation`` is put first, with
  ``max_attempts``); the node can read what the assertion said with ``feedback()``;
  once the attempts are spent, the request fails with the ``AssertionViolation``;
* ``fail``: kept, and the request fails with an ``AssertionViolation`` naming the
  assertion, the node and the item's ancestry.

Declared with ``@assertion(node, severity=...)`` (or ``@consistency(node)``: the
paper's identifier and attributes, over a ``@streaming`` node's items) and attached at
compile: ``builder.compile(assertions=[...])``, on stock LangGraph and on alto alike.
``attach`` wraps each asserted node's runnable in an ``AssertedNode`` (``checking.py``
runs the checks, keeps the flags and the retry state), so both backends check the same
things in the same order and keep the same flags. An assertion that raises anything
but ``AssertionError`` fails the request with an ``AssertionCheckError`` naming it.
"""

from __future__ import annotations

import dataclasses
import importlib
import inspect
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from langgraph.pregel import Pregel
from langgraph.types import RetryPolicy

from ._langgraph import CONF, CONFIG_KEY_TASK_ID
from .checking import (
    CONFIG_KEY_FEEDBACK,
    EVENT,
    SEVERITIES,
    STEP_CHANNEL,
    AssertedNode,
    StepEnd,
)
from .errors import AssertionCheckError, AssertionViolation
from .flagstore import FlagStore
from .streams import is_streaming, node_function

__all__ = [
    "EVENT",
    "OVER",
    "SCOPES",
    "SEVERITIES",
    "AssertedNode",
    "Assertion",
    "assertion",
    "attach",
    "consistency",
    "declarations_of",
    "declared",
    "feedback",
    "from_config",
    "is_asserted",
    "stats",
]

#: what an assertion checks (``Assertion.over``)
OVER = ("output", "tokens", "response")
#: where a consistency assertion's observations must agree: the items of one run of
#: a @streaming node, the runs of the node in one superstep (a fan-out's Sends), or a
#: thread's turns (what the node returned, or yielded, at each earlier step)
SCOPES = ("items", "step", "thread")


@dataclasses.dataclass(frozen=True)
class Assertion:
    """A check over node ``node``'s input and output (see the module docstring)."""

    node: str
    check: Callable[[Any, Any], Any]
    severity: str = "record"
    name: str = ""
    #: for ``retry``: the most runs of the node (LangGraph's ``RetryPolicy.max_attempts``)
    max_attempts: int = 3
    #: what it checks: the node's ``"output"`` (each item, for a ``@streaming`` node),
    #: each LM call's ``"tokens"`` as they arrive, or each LM call's ``"response"``
    over: str = "output"
    #: a consistency assertion (``consistency``): where its observations must agree
    scope: str | None = None

    def __post_init__(self) -> None:
        if not self.name:
            object.__setattr__(self, "name", getattr(self.check, "__name__", repr(self.check)))
        where = f"assertion {self.name!r}"
        if not isinstance(self.node, str) or not self.node:
            raise ValueError(f"{where}: node must be a node's name, got {self.node!r}")
        if self.severity not in SEVERITIES:
            raise ValueError(
                f"{where}: severity must be one of {', '.join(SEVERITIES)}, got {self.severity!r}"
            )
        if (
            isinstance(self.max_attempts, bool)
            or not isinstance(self.max_attempts, int)
            or self.max_attempts < 1
        ):
            raise ValueError(
                f"{where}: max_attempts must be an integer >= 1, got {self.max_attempts!r}"
            )
        if self.over not in OVER:
            raise ValueError(f"{where}: over must be one of {', '.join(OVER)}, got {self.over!r}")
        if self.scope is not None:
            if self.scope not in SCOPES:
                raise ValueError(
                    f"{where}: scope must be one of {', '.join(SCOPES)}, got {self.scope!r}"
                )
            if self.over != "output":
                raise ValueError(f"{where}: a consistency assertion is over='output'")
            if self.scope == "step" and self.severity == "retry":
                raise ValueError(
                    f"{where}: a consistency assertion over a step's runs is compared once "
                    "the step has ended, too late to run the node again: severity 'record' "
                    "or 'fail'"
                )
            if self.scope == "thread" and self.severity != "record":
                raise ValueError(
                    f"{where}: a consistency assertion over a thread's turns is "
                    f"severity='record' (it flags, with the thread's majority as the weak "
                    f"label), got {self.severity!r}"
                )
        if not callable(self.check):
            raise TypeError(f"{where}: its check must be callable, got {self.check!r}")
        if inspect.iscoroutinefunction(self.check):
            raise TypeError(f"{where}: async checks are not supported yet; make it a def")
        try:
            inspect.signature(self.check).bind(None, None)
        except TypeError:
            raise TypeError(
                f"{where} on node {self.node!r}: its check must take (input, output), "
                f"but its signature is {inspect.signature(self.check)}"
            ) from None
        except ValueError:
            pass  # no signature to read (a builtin): called as it is

    def __call__(self, input: Any, output: Any) -> Any:
        return self.check(input, output)


def assertion(
    node: str,
    *,
    severity: str = "record",
    name: str | None = None,
    max_attempts: int = 3,
    over: str = "output",
) -> Callable[[Callable[[Any, Any], Any]], Assertion]:
    """Declare ``check(input, output)`` an assertion over node ``node``'s outputs
    (``over="output"``: what it returns, or each item a ``@streaming`` node yields), or
    over the LM calls the node makes: ``check(messages, text)`` on the text generated so
    far, as tokens arrive (``over="tokens"``), or on each whole response
    (``over="response"``)."""

    def declare(check: Callable[[Any, Any], Any]) -> Assertion:
        return Assertion(node, check, severity, name or "", max_attempts, over)

    return declare


def consistency(
    node: str,
    *,
    scope: str = "items",
    severity: str = "record",
    name: str | None = None,
    max_attempts: int = 3,
) -> Callable[[Callable[[Any, Any], Any]], Assertion]:
    """Declare ``observe(input, output) -> (key, attributes) | None`` a consistency
    assertion (the paper's identifier and attributes): within its ``scope``, every
    observation with the same key must have equal attributes, and one that differs
    from its key's majority fires, with the majority's attributes as the flag's
    proposed ``weak_label``.

    * ``scope="items"``: the items one run of a @streaming node yields, compared once
      the node returns (all of a key's fire on a tie);
    * ``scope="step"``: what the node returns (or each item it yields) in each of its
      runs in one superstep, such as the Sends of a fan-out, compared when the step
      ends (LangGraph's loop applies its writes first). ``fail`` fails the run there;
      no ``retry``;
    * ``scope="thread"``: what the node returns (or each item it yields) at each turn
      of a thread, compared with the same key's observations at the thread's earlier
      steps (kept in the flag store; run with a checkpointer and a ``thread_id``).
      Severity ``record`` only."""

    def declare(observe: Callable[[Any, Any], Any]) -> Assertion:
        return Assertion(node, observe, severity, name or "", max_attempts, "output", scope)

    return declare


def feedback() -> tuple[str, ...]:
    """Called in a node: what its ``retry`` assertions said of its earlier attempts at
    this task, oldest first (empty on a first attempt)."""
    from langgraph.config import get_config

    try:
        conf = get_config().get(CONF) or {}
    except RuntimeError:  # not in a node
        return ()
    task, said = conf.get(CONFIG_KEY_FEEDBACK) or (None, ())
    # a graph run inside the retried node inherits the key: its nodes' tasks are others
    return tuple(said) if conf.get(CONFIG_KEY_TASK_ID) in (None, task) else ()


def declared(value: Any) -> dict[str, tuple[Assertion, ...]]:
    """The ``assertions=`` compile argument, by node: a list of ``Assertion`` (or one),
    or a mapping of node name to assertions or plain ``check`` functions (severity
    ``record``)."""
    out: dict[str, list[Assertion]] = {}
    if value is None:
        return {}
    if isinstance(value, Assertion):
        value = [value]
    if isinstance(value, Mapping):
        items: list[Assertion] = []
        for node, checks in value.items():
            for check in checks if isinstance(checks, Sequence) else [checks]:
                if isinstance(check, Assertion):
                    if check.node != node:
                        raise ValueError(
                            f"assertions[{node!r}]: assertion {check.name!r} is declared "
                            f"for node {check.node!r}"
                        )
                    items.append(check)
                else:
                    items.append(Assertion(node, check))
    elif isinstance(value, Sequence) and not isinstance(value, str):
        items = list(value)
        for item in items:
            if not isinstance(item, Assertion):
                raise TypeError(
                    "assertions: a list holds @assertion(...) declarations, got "
                    f"{item!r}; give plain functions as {{node: [function, ...]}}"
                )
    else:
        raise TypeError(
            "assertions must be a list of @assertion(...) declarations or a mapping of "
            f"node names to checks, got {value!r}"
        )
    for item in items:
        names = [a.name for a in out.setdefault(item.node, [])]
        if item.name in names:
            raise ValueError(f"node {item.node!r} has two assertions named {item.name!r}")
        out[item.node].append(item)
    return {node: tuple(checks) for node, checks in out.items()}


def from_config(value: Any, node: str, where: str) -> tuple[Assertion, ...]:
    """A stage table's ``assertions``: a list of ``"module:function"`` paths (a function
    ``check(input, output)``, severity ``record``, or an ``@assertion`` declaration), or
    of tables ``{check = "module:function", severity = ..., max_attempts = ..., name = ...,
    over = ..., scope = ...}`` (``scope``: a consistency assertion)."""
    if not isinstance(value, list):
        raise ValueError(f'{where} must be a list of "module:function" or tables, got {value!r}')
    out = []
    for entry in value:
        table = {"check": entry} if isinstance(entry, str) else entry
        if not isinstance(table, Mapping) or not isinstance(table.get("check"), str):
            raise ValueError(
                f'{where}: each is "module:function" or a table with check = '
                f'"module:function", got {entry!r}'
            )
        unknown = set(table) - {"check", "severity", "max_attempts", "name", "over", "scope"}
        if unknown:
            raise ValueError(f"{where}: unknown key(s) {', '.join(sorted(unknown))} in {entry!r}")
        found = _load(table["check"], where)
        given = {k: v for k, v in table.items() if k != "check"}
        if isinstance(found, Assertion):
            if found.node != node:
                raise ValueError(f"{where}: {table['check']!r} is declared for node {found.node!r}")
            out.append(dataclasses.replace(found, **given))
        else:
            out.append(Assertion(node, found, **given))
    return tuple(out)


def _load(path: str, where: str) -> Any:
    module, sep, attr = path.partition(":")
    if not sep or not module or not attr:
        raise ValueError(f'{where}: {path!r} is not "module:function"')
    try:
        found: Any = importlib.import_module(module)
    except ImportError as exc:
        raise ImportError(f"{where}: could not import {module!r} (from {path!r}): {exc}") from exc
    for part in attr.split("."):
        try:
            found = getattr(found, part)
        except AttributeError:
            raise ValueError(f"{where}: module {module!r} has no {attr!r}") from None
    return found


def attach(graph: Any, value: Any, store: Any = None) -> None:
    """Put the assertions declared in ``value`` on the nodes of ``graph``, a freshly
    compiled ``StateGraph`` the caller owns; firings go to ``store`` (a ``FlagStore``,
    a path, or None: the default store)."""
    by_node = declared(value)
    if not by_node:
        return
    store = store if isinstance(store, FlagStore) else FlagStore(store)
    builder = graph.builder
    for name, checks in by_node.items():
        if name not in builder.nodes and "/" in name:
            raise ValueError(
                f"assertion {checks[0].name!r} is declared for {name!r}, a node of a subgraph: "
                "declare it when compiling the subgraph (its compile(assertions=...))"
            )
        if name not in builder.nodes:
            known = ", ".join(repr(n) for n in builder.nodes)
            raise ValueError(
                f"assertion {checks[0].name!r} is declared for node {name!r}, which this "
                f"graph does not have (its nodes: {known})"
            )
        node = graph.nodes[name]
        if any(a.scope == "step" for a in checks):
            graph.channels.setdefault(STEP_CHANNEL, StepEnd())
        scoped = next((a for a in checks if a.scope == "items"), None)
        if scoped is not None and not is_streaming(node_function(builder.nodes[name].runnable)):
            raise ValueError(
                f"consistency assertion {scoped.name!r} (scope='items') compares the items "
                f"a @streaming node yields; node {name!r} is not one"
            )
        if isinstance(node.bound, Pregel):  # (a node that only calls a graph is fine)
            raise ValueError(
                f"assertion {checks[0].name!r}: node {name!r} is a subgraph; assertions "
                "over a subgraph node are not supported yet (put them on its inner nodes)"
            )
        own = list(node.retry_policy or graph.retry_policy or ())
        # a fail (or a spent retry) is never retried by the node's own policies (the
        # default one retries AssertionError)
        ours = [RetryPolicy(max_attempts=1, retry_on=_ends)]
        if any(a.severity == "retry" for a in checks):
            # LangGraph keeps one attempt count per task, whichever policy matched: the
            # assertions' own budgets are counted by AssertedNode, which says when to stop
            budget = sum(a.max_attempts for a in checks if a.severity == "retry")
            budget += max((p.max_attempts for p in own), default=0)
            ours.insert(
                0,
                RetryPolicy(
                    initial_interval=0.0, jitter=False, max_attempts=budget, retry_on=_retries
                ),
            )
        graph.nodes[name] = node.copy(
            {
                "bound": AssertedNode(name, node.bound, checks, store, graph.get_name()),
                "retry_policy": [*ours, *own],
            }
        )


def _retries(exc: BaseException) -> bool:
    return isinstance(exc, AssertionViolation) and exc.retrying


def _ends(exc: BaseException) -> bool:
    return isinstance(exc, AssertionCheckError) or (
        isinstance(exc, AssertionViolation) and not exc.retrying
    )


def declarations_of(graph: Any) -> tuple[list[Assertion], FlagStore | None]:
    """The assertions attached to ``graph``'s nodes, and their store (for a graph
    compiled again from its builder)."""
    found = [n.bound for n in graph.nodes.values() if isinstance(n.bound, AssertedNode)]
    return [a for node in found for a in node.assertions], (found[0].store if found else None)


def is_asserted(runnable: Any) -> bool:
    return isinstance(runnable, AssertedNode)


def stats(app: Any) -> dict[str, dict[str, dict[str, Any]]]:
    """Per node and assertion of ``app`` (a graph compiled with ``assertions=``, on
    either backend): its severity, how often it was ``checked`` and ``fired``, and the
    ``seconds`` its checks took, over this app's runs so far."""
    return {
        name: node.bound.stats()
        for name, node in app.nodes.items()
        if isinstance(node.bound, AssertedNode)
    }
