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

Declared with ``@assertion(node, severity=...)`` and attached at compile:
``builder.compile(assertions=[...])``, on stock LangGraph and on alto alike. The checks
run in the app process, after the node returns and before its output is used
(``AssertedNode`` wraps the node's runnable, outside the ``RemoteNode`` of a node in a
worker process), so both backends check the same things in the same order and keep
the same flags; a task that runs ahead of its superstep on alto keeps its flags (and
counts them) only once the loop adopts its result (``CONFIG_KEY_ON_ADOPT``), so a twin
that misses or is dropped leaves none. An assertion that raises anything but
``AssertionError`` fails the request with an ``AssertionCheckError`` naming it.
"""

from __future__ import annotations

import contextlib
import dataclasses
import importlib
import inspect
import threading
import time
import warnings
from collections import OrderedDict
from collections.abc import AsyncIterator, Callable, Iterator, Mapping, Sequence
from typing import Any

from langchain_core.runnables import Runnable, RunnableConfig, ensure_config
from langchain_core.runnables.config import var_child_runnable_config
from langgraph.pregel import Pregel
from langgraph.types import RetryPolicy

from ._langgraph import CONF, CONFIG_KEY_RUNTIME, CONFIG_KEY_TASK_ID
from .config_keys import CONFIG_KEY_ANCESTRY, CONFIG_KEY_ON_ADOPT, CONFIG_KEY_REQUEST
from .errors import AssertionCheckError, AssertionViolation
from .flagstore import FlagStore
from .streams import is_fold, is_streaming, node_function
from .views import StateView, plain

SEVERITIES = ("record", "retry", "fail")
#: where a node's config carries its retry assertions' feedback (shipped to workers:
#: configurable keys without ``__`` travel with a call)
CONFIG_KEY_FEEDBACK = "alto_assertion_feedback"
#: the custom callback event a firing sends (``on_custom_event`` handlers, tracing)
EVENT = "alto_assertion"
#: how many tasks' feedback is remembered at once (a task's is dropped when it ends)
_FEEDBACK_TASKS = 4096


@dataclasses.dataclass(frozen=True)
class Assertion:
    """A check over node ``node``'s input and output (see the module docstring)."""

    node: str
    check: Callable[[Any, Any], Any]
    severity: str = "record"
    name: str = ""
    #: for ``retry``: the most runs of the node (LangGraph's ``RetryPolicy.max_attempts``)
    max_attempts: int = 3

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
    node: str, *, severity: str = "record", name: str | None = None, max_attempts: int = 3
) -> Callable[[Callable[[Any, Any], Any]], Assertion]:
    """Declare ``check(input, output)`` an assertion over node ``node``'s outputs."""

    def declare(check: Callable[[Any, Any], Any]) -> Assertion:
        return Assertion(node, check, severity, name or "", max_attempts)

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
    of tables ``{check = "module:function", severity = ..., max_attempts = ..., name = ...}``."""
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
        unknown = set(table) - {"check", "severity", "max_attempts", "name"}
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
        if isinstance(node.bound, Pregel):  # (a node that only calls a graph is fine)
            raise ValueError(
                f"assertion {checks[0].name!r}: node {name!r} is a subgraph; assertions "
                "over a subgraph node are not supported yet (put them on its inner nodes)"
            )
        fn = node_function(builder.nodes[name].runnable)
        if is_streaming(fn) or is_fold(fn):
            raise ValueError(
                f"assertion {checks[0].name!r}: node {name!r} is a @streaming or @fold node; "
                "assertions over streamed items are not supported yet"
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


@dataclasses.dataclass
class _Tried:
    """One task's attempts so far: what its retry assertions said, how often each fired."""

    said: list[str] = dataclasses.field(default_factory=list)
    fired: dict[str, int] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass
class _Counts:
    checked: int = 0
    fired: int = 0
    seconds: float = 0.0


class AssertedNode(Runnable[Any, Any]):
    """A node's runnable, followed by its assertions over what it was given and returned."""

    def __init__(
        self,
        node: str,
        inner: Runnable[Any, Any],
        assertions: tuple[Assertion, ...],
        store: FlagStore,
        app: str,
    ) -> None:
        self.node = node
        self.inner = inner
        self.assertions = assertions
        self.store = store
        self.app = app
        self.name = inner.get_name()
        self._lock = threading.Lock()
        self._counts = {a.name: _Counts() for a in assertions}
        #: task id -> its retry assertions' firings so far
        self._tried: OrderedDict[str, _Tried] = OrderedDict()

    def __reduce__(self) -> Any:
        # shipped inside node code: the same checks and store; counts start afresh there
        return (AssertedNode, (self.node, self.inner, self.assertions, self.store, self.app))

    def around(self, inner: Runnable[Any, Any]) -> AssertedNode:
        """The same assertions around another runnable (the ``RemoteNode`` standing in
        for ``self.inner`` when the node runs in worker processes)."""
        new = AssertedNode(self.node, inner, self.assertions, self.store, self.app)
        new._lock, new._counts, new._tried = self._lock, self._counts, self._tried
        return new

    def __getattr__(self, name: str) -> Any:
        # what LangGraph and tools read off a node's runnable is the node's own
        inner = self.__dict__.get("inner")
        if inner is None:
            raise AttributeError(name)
        return getattr(inner, name)

    def __repr__(self) -> str:
        return f"AssertedNode({self.inner!r}, {[a.name for a in self.assertions]})"

    # -- running ---------------------------------------------------------------------
    def _prepare(self, config: RunnableConfig | None) -> tuple[RunnableConfig, Any]:
        config = ensure_config(config)
        conf = config.get(CONF) or {}
        task = conf.get(CONFIG_KEY_TASK_ID)
        info = getattr(conf.get(CONFIG_KEY_RUNTIME), "execution_info", None)
        with self._lock:
            if getattr(info, "node_attempt", None) == 1:
                self._tried.pop(task, None)  # left by a run that ended (resumed: same id)
            tried = self._tried.get(task) if task is not None else None
            said = list(tried.said) if tried is not None else []
        if said:
            config = {**config, CONF: {**config[CONF], CONFIG_KEY_FEEDBACK: (task, tuple(said))}}
        return config, task

    def invoke(self, input: Any, config: RunnableConfig | None = None, **kwargs: Any) -> Any:
        config, task = self._prepare(config)
        with _context(config):
            output = self.inner.invoke(input, config, **kwargs)
        self._check(input, output, config, task)
        return output

    async def ainvoke(self, input: Any, config: RunnableConfig | None = None, **kwargs: Any) -> Any:
        config, task = self._prepare(config)
        with _context(config):
            output = await self.inner.ainvoke(input, config, **kwargs)
        self._check(input, output, config, task)
        return output

    def stream(
        self, input: Any, config: RunnableConfig | None = None, **kwargs: Any
    ) -> Iterator[Any]:
        # the output is checked whole before any of it goes on
        config, task = self._prepare(config)
        with _context(config):
            chunks = list(self.inner.stream(input, config, **kwargs))
        self._check(input, _whole(chunks), config, task)
        yield from chunks

    async def astream(
        self, input: Any, config: RunnableConfig | None = None, **kwargs: Any
    ) -> AsyncIterator[Any]:
        config, task = self._prepare(config)
        with _context(config):
            chunks = [c async for c in self.inner.astream(input, config, **kwargs)]
        self._check(input, _whole(chunks), config, task)
        for chunk in chunks:
            yield chunk

    def _check(self, input: Any, output: Any, config: RunnableConfig, task: Any) -> None:
        checked: list[tuple[Assertion, float]] = []
        fired: list[tuple[Assertion, str]] = []
        conf = config.get(CONF) or {}
        ancestry = conf.get(CONFIG_KEY_ANCESTRY)
        try:
            for a in self.assertions:
                start = time.perf_counter()
                try:
                    result = a.check(input, output)
                except AssertionError as exc:
                    result = str(exc)
                except Exception as exc:
                    raise AssertionCheckError(a.name, self.node, exc) from exc
                finally:
                    checked.append((a, time.perf_counter() - start))
                if (message := _verdict(a, result)) is not None:
                    fired.append((a, message))
        finally:
            retrying = self._retrying(task, fired)

            def observe(task_id: Any, cfg: RunnableConfig) -> None:
                self._observe(checked, fired, input, output, ancestry, cfg)

            def settle(task_id: Any, cfg: RunnableConfig) -> None:
                observe(task_id, cfg)
                self._remember(task_id, fired, retrying)

            twin, effects = conf.get(CONFIG_KEY_ON_ADOPT) or (None, None)
            if effects is None:
                settle(task, config)
            elif twin == task:  # a task run ahead: settled once the loop adopts it, as its own
                effects.append(settle)
            else:  # a node of a graph run inside a task run ahead: its own retries now
                self._remember(task, fired, retrying)
                effects.append(observe)
        if fired:
            a, message = max(fired, key=lambda f: SEVERITIES.index(f[0].severity))
            if a.severity != "record":
                raise AssertionViolation(
                    a.name, self.node, a.severity, message, ancestry, retrying=retrying
                )

    def _retrying(self, task: Any, fired: list[tuple[Assertion, str]]) -> bool:
        """Whether the node runs again: a retry assertion fired that has attempts left
        at this task, and no fail assertion fired."""
        if any(a.severity == "fail" for a, _ in fired):
            return False
        with self._lock:
            tried = self._tried.get(task) if task is not None else None
            before = tried.fired if tried is not None else {}
            return any(
                before.get(a.name, 0) + 1 < a.max_attempts
                for a, _ in fired
                if a.severity == "retry"
            )

    def _observe(
        self,
        checked: list[tuple[Assertion, float]],
        fired: list[tuple[Assertion, str]],
        input: Any,
        output: Any,
        ancestry: Any,
        config: RunnableConfig,
    ) -> None:
        """What one check of a task's output shows: counts, flags kept and reported."""
        with self._lock:
            for a, seconds in checked:
                counts = self._counts[a.name]
                counts.checked += 1
                counts.seconds += seconds
            for a, _ in fired:
                self._counts[a.name].fired += 1
        for a, message in fired:
            self._record(a, message, input, output, ancestry, config)

    def _remember(self, task: Any, fired: list[tuple[Assertion, str]], retrying: bool) -> None:
        """What the task's next attempt needs: its retry assertions' firings so far."""
        if not retrying or task is None:
            self._forget(task)
            return
        with self._lock:
            tried = self._tried.setdefault(task, _Tried())
            for a, message in fired:
                if a.severity == "retry":
                    tried.said.append(message)
                    tried.fired[a.name] = tried.fired.get(a.name, 0) + 1
            self._tried.move_to_end(task)
            while len(self._tried) > _FEEDBACK_TASKS:
                self._tried.popitem(last=False)

    def _forget(self, task: Any) -> None:
        if task is not None and self._tried:
            with self._lock:
                self._tried.pop(task, None)

    def _record(
        self,
        a: Assertion,
        message: str,
        input: Any,
        output: Any,
        ancestry: Any,
        config: RunnableConfig,
    ) -> None:
        conf = config.get(CONF) or {}
        try:
            self.store.record(
                app=self.app,
                thread_id=_text(conf.get("thread_id")),
                request_id=_text(conf.get(CONFIG_KEY_REQUEST)),
                ancestry=list(ancestry) if ancestry is not None else None,
                node=self.node,
                assertion=a.name,
                severity=a.severity,
                message=message,
                input=plain(input) if isinstance(input, StateView) else input,
                output=output,
            )
        except Exception as exc:  # monitoring must not fail the request
            warnings.warn(
                f"alto: could not keep a flag of assertion {a.name!r} on node {self.node!r} "
                f"in {self.store.where}: {type(exc).__name__}: {exc}",
                RuntimeWarning,
                stacklevel=2,
            )
        from langchain_core.callbacks.manager import dispatch_custom_event

        try:  # seen by callback handlers and tracing (LangSmith shows custom events)
            dispatch_custom_event(
                EVENT,
                {
                    "node": self.node,
                    "assertion": a.name,
                    "severity": a.severity,
                    "message": message,
                },
                config=config,
            )
        except RuntimeError:  # no run to report it under (the node was called bare)
            pass

    def stats(self) -> dict[str, dict[str, Any]]:
        with self._lock:
            return {
                a.name: {"severity": a.severity, **dataclasses.asdict(self._counts[a.name])}
                for a in self.assertions
            }


def stats(app: Any) -> dict[str, dict[str, dict[str, Any]]]:
    """Per node and assertion of ``app`` (a graph compiled with ``assertions=``, on
    either backend): its severity, how often it was ``checked`` and ``fired``, and the
    ``seconds`` its checks took, over this app's runs so far."""
    return {
        name: node.bound.stats()
        for name, node in app.nodes.items()
        if isinstance(node.bound, AssertedNode)
    }


def _verdict(a: Assertion, result: Any) -> str | None:
    """None if the check held, else its message."""
    if type(result).__name__ == "bool_":  # numpy's, from np.all(...) and the like
        result = bool(result)
    if result is None or result is True:
        return None
    if result is False:
        return f"assertion {a.name!r} did not hold"
    if isinstance(result, str):
        return result or f"assertion {a.name!r} did not hold"
    raise AssertionCheckError(
        a.name,
        a.node,
        TypeError(
            f"it returned {result!r}; an assertion returns True or None when it holds, "
            "False or a message (str) when it does not"
        ),
    )


@contextlib.contextmanager
def _context(config: RunnableConfig) -> Iterator[None]:
    """Node code reads its config from the context (``get_config()``, ``feedback()``),
    which LangGraph set before calling this wrapper: the feedback must be in it too."""
    if CONFIG_KEY_FEEDBACK not in (config.get(CONF) or {}):
        yield
        return
    token = var_child_runnable_config.set(config)
    try:
        yield
    finally:
        var_child_runnable_config.reset(token)


def _whole(chunks: list[Any]) -> Any:
    """A runnable's output from the chunks it streamed (a node's is one chunk)."""
    if not chunks:
        return None
    out = chunks[0]
    for chunk in chunks[1:]:
        out = out + chunk
    return out


def _text(value: Any) -> str | None:
    return None if value is None else str(value)
