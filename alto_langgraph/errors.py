"""Every exception and warning alto raises of its own, under one base class.

``except alto_langgraph.AltoError`` catches them all. Each also subclasses the built-in
exception an app would already catch for that kind of failure (a lost worker is a
``ConnectionError``, so LangGraph's default ``RetryPolicy`` retries it), so adopting
alto changes no ``except`` clause. Exceptions a node raises are never wrapped: a
request fails with the node's own exception, as on stock LangGraph.
"""

from __future__ import annotations

from typing import Any


class AltoError(Exception):
    """Base class of the exceptions alto raises itself."""


class ShippingError(AltoError, TypeError):
    """Node code, a node's input or output, or a runtime context could not be sent to
    (or from) a stage instance in a worker process; the message names the value and
    the object inside it that does not pickle."""


class DeploymentError(AltoError, RuntimeError):
    """The deployment could not start: a stage's code did not load in its worker, or
    the processes did not become ready in time."""


class StageInstanceLost(AltoError, ConnectionError):
    """The stage instance running a call died (or could not start). A
    ``ConnectionError``, so LangGraph's default ``RetryPolicy`` retries the node."""


class StageOverloaded(AltoError, ConnectionError):
    """A call found every instance it could go to at its stage's ``max_pending``
    calls, and was refused at once. A ``ConnectionError``, so a ``RetryPolicy``
    retries it (after its backoff): that is how a producer waits for room."""


class RoutingError(AltoError, RuntimeError):
    """A stage's routing policy picked no live instance for a call (it returned
    something else); the call fails, the router goes on serving."""


class StageError(AltoError, RuntimeError):
    """An exception a node raised in a stage instance that could not travel back as
    itself (it does not pickle, or does not unpickle): its type name, message and the
    instance's traceback."""

    def __init__(self, type_name: str, message: str, remote_traceback: str) -> None:
        super().__init__(f"{type_name}: {message}")
        self.type_name = type_name
        self.message = message
        self.remote_traceback = remote_traceback

    def __reduce__(self) -> Any:
        return (StageError, (self.type_name, self.message, self.remote_traceback))

    def __str__(self) -> str:
        return (
            f"{self.type_name}: {self.message} (raised in a stage instance; its traceback "
            "is in .remote_traceback)"
        )


class EngineError(AltoError, RuntimeError):
    """A generation failed in the LM engine (not because of its input)."""


class AssertionViolation(AltoError, AssertionError):
    """A model assertion of severity ``fail`` (or ``retry``, its attempts spent) did not
    hold on a node's output (``assertions.py``): the request fails with it."""

    def __init__(
        self,
        assertion: str,
        node: str,
        severity: str,
        message: str,
        ancestry: Any = None,
        retrying: bool = False,
        item: int | None = None,
    ) -> None:
        where = f" (item {list(ancestry)})" if ancestry else ""
        of = f", on the {_ordinal(item + 1)} item it yielded" if item is not None else ""
        super().__init__(f"assertion {assertion!r} on node {node!r}{where}{of}: {message}")
        self.assertion = assertion
        self.node = node
        self.severity = severity
        self.message = message
        self.ancestry = tuple(ancestry) if ancestry is not None else None
        #: the node runs again (a retry assertion with attempts left): not the
        #: request's outcome
        self.retrying = retrying
        #: a @streaming node's item it fired on (0: the first it yielded)
        self.item = item

    def __reduce__(self) -> Any:
        return (
            AssertionViolation,
            (
                self.assertion,
                self.node,
                self.severity,
                self.message,
                self.ancestry,
                self.retrying,
                self.item,
            ),
        )


def _ordinal(n: int) -> str:
    suffix = "th" if 10 <= n % 100 <= 20 else {1: "st", 2: "nd", 3: "rd"}.get(n % 10, "th")
    return f"{n}{suffix}"


class AssertionCheckError(AltoError, RuntimeError):
    """A model assertion's check raised (something other than ``AssertionError``), or
    returned something it may not: the request fails, naming the assertion; the
    check's own exception is the ``__cause__``."""

    def __init__(self, assertion: str, node: str, error: BaseException) -> None:
        super().__init__(
            f"assertion {assertion!r} on node {node!r} raised {type(error).__name__}: {error}"
        )
        self.assertion = assertion
        self.node = node


class AltoFallbackWarning(UserWarning):
    """A run used a feature alto does not run yet, so stock LangGraph ran it instead
    (the answer is LangGraph's)."""


__all__ = [
    "AltoError",
    "AssertionCheckError",
    "AssertionViolation",
    "AltoFallbackWarning",
    "DeploymentError",
    "EngineError",
    "RoutingError",
    "StageOverloaded",
    "ShippingError",
    "StageError",
    "StageInstanceLost",
]
