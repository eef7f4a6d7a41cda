"""State views: the input of a task that runs before its superstep, recording what it reads.

A pull task of logical step ``k`` reads the state as of the end of step ``k - 1``. When it
runs early, it gets a view of the writes known so far instead; the view remembers which
state keys the node read, so that at hand-over alto can tell whether any of them received
a write the view did not hold (``progress.py``). Three shapes, as LangGraph hands a node
its state:

* a dict (``TypedDict`` and plain dict states): ``StateView``, a ``dict`` subclass;
* a pydantic model or a dataclass (LangGraph builds ``schema(**values)``): an instance of
  a subclass of the schema whose attribute reads are recorded (``tracked_class``).

What counts as a read: a key's value (``state["x"]``, ``state.get("x")``, ``state.x``),
or whether it is there (``"x" in state``). ``len(state)``, its truth value, and ``==``
with a dict of another size read which keys are there (LangChain's callbacks do that
with every input). Reading the whole state (iterating it, ``dict(state)``, ``==``,
``model_dump()``, ``vars()``, copying or pickling it) reads every key. What a node
writes into its own input is its own: it does not reach the graph's state.
"""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import Iterable, Mapping
from typing import Any


class ReadLog:
    """What one task read of its state view: keys, which keys are there (``shape``),
    or everything (``whole``)."""

    __slots__ = ("keys", "present", "shape", "whole")

    def __init__(self, present: Iterable[str] = ()) -> None:
        self.keys: set[str] = set()
        #: the keys the task's input held (a model or dataclass has every field)
        self.present = frozenset(present)
        self.shape = False
        self.whole = False

    def read(self, key: Any) -> None:
        if isinstance(key, str):
            self.keys.add(key)
        else:  # an odd key: it cannot name one channel
            self.whole = True

    def read_all(self) -> None:
        self.whole = True

    def state(self) -> tuple[list[str], bool, bool]:
        """What was read, to send from a worker process to the app (``merge``)."""
        return sorted(self.keys), self.shape, self.whole

    def merge(self, state: tuple[list[str], bool, bool]) -> None:
        keys, shape, whole = state
        self.keys.update(keys)
        self.shape = self.shape or shape
        self.whole = self.whole or whole

    def channels(self, inputs: Iterable[str]) -> Iterable[str]:
        """The channels the task read, among its input channels ``inputs``. A key that is
        there stays there (state channels keep their value), so reading the shape reads
        the keys that were not."""
        if self.whole:
            return inputs
        if self.shape:
            return self.keys.union(set(inputs).difference(self.present))
        return self.keys


def _reads_key(name: str) -> Any:
    method = getattr(dict, name)

    def one(self: StateView, key: Any, *args: Any) -> Any:
        self._log.read(key)
        return method(self, key, *args)

    one.__name__ = name
    return one


def _reads_all(name: str) -> Any:
    method = getattr(dict, name)

    def whole(self: StateView, *args: Any, **kwargs: Any) -> Any:
        self._log.read_all()
        return method(self, *args, **kwargs)

    whole.__name__ = name
    return whole


class StateView(dict):
    """A dict state for a task that runs ahead; reads are recorded in ``_log``."""

    __slots__ = ("_log",)

    def __init__(self, values: Mapping[str, Any], log: ReadLog) -> None:
        dict.__init__(self, values)
        self._log = log

    # reads of one key (its value, or whether it is there)
    __getitem__ = _reads_key("__getitem__")
    __contains__ = _reads_key("__contains__")
    get = _reads_key("get")
    setdefault = _reads_key("setdefault")
    pop = _reads_key("pop")

    # Whole-state reads. ``__iter__`` and ``keys`` being overridden also sends
    # ``dict(view)``, ``{**view}``, ``f(**view)`` and ``json.dumps`` through them
    # (CPython copies a dict subclass the slow way when its iteration is its own).
    __iter__ = _reads_all("__iter__")

    def __len__(self) -> int:
        self._log.shape = True
        return dict.__len__(self)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Mapping):
            return NotImplemented
        self._log.shape = True  # other keys: not equal, whatever the values
        if dict.keys(self) != set(other.keys()):
            return False
        for key, value in dict.items(self):  # as dict's ==, reading up to a difference
            self._log.keys.add(key)
            theirs = other[key]
            if not (value is theirs or value == theirs):
                return False
        return True

    def __ne__(self, other: object) -> bool:
        equal = self.__eq__(other)
        return equal if equal is NotImplemented else not equal

    __or__ = _reads_all("__or__")
    __ror__ = _reads_all("__ror__")
    __repr__ = _reads_all("__repr__")
    __reversed__ = _reads_all("__reversed__")
    keys = _reads_all("keys")
    items = _reads_all("items")
    values = _reads_all("values")
    popitem = _reads_all("popitem")
    __hash__ = None  # type: ignore[assignment]

    def copy(self) -> dict[str, Any]:
        self._log.read_all()
        return dict(dict.items(self))

    def __reduce_ex__(self, protocol: Any) -> Any:
        # a copy or a pickle is a plain dict of everything (it is read whole)
        self._log.read_all()
        return (dict, (dict(dict.items(self)),))


#: attribute reads of a model or dataclass instance that read every field
_WHOLE_READS = frozenset(
    {
        "__dict__",
        "__getstate__",
        "__reduce__",
        "__reduce_ex__",
        "__pydantic_extra__",
        "__pydantic_fields_set__",
        "model_fields_set",
        "model_dump",
        "model_dump_json",
        "model_copy",
        "dict",
        "json",
        "copy",
    }
)

_classes: dict[type, type] = {}
_classes_lock = threading.Lock()


def _field_names(schema: type) -> frozenset[str]:
    if dataclasses.is_dataclass(schema):
        return frozenset(f.name for f in dataclasses.fields(schema))
    return frozenset(getattr(schema, "model_fields", {}))


def tracked_class(schema: type) -> type:
    """A subclass of ``schema`` (a pydantic model or a dataclass) whose instances record
    field reads in the ``ReadLog`` ``track`` gave them. Built once per schema."""
    with _classes_lock:
        cls = _classes.get(schema)
        if cls is not None:
            return cls
        fields = _field_names(schema)
        logs: dict[int, ReadLog] = {}
        base_getattribute = schema.__getattribute__

        def __reduce_ex__(self: Any, protocol: Any) -> Any:
            # pickled (or copied) as an instance of the user's class, read whole: this
            # class is made at run time and cannot be found by name
            logs.get(id(self), ReadLog()).read_all()
            plain = object.__new__(schema)
            for attr in (
                "__dict__",
                "__pydantic_fields_set__",
                "__pydantic_extra__",
                "__pydantic_private__",
            ):
                try:
                    value = object.__getattribute__(self, attr)
                except AttributeError:
                    continue
                object.__setattr__(plain, attr, dict(value) if attr == "__dict__" else value)
            return plain.__reduce_ex__(protocol)

        def __getattribute__(self: Any, name: str) -> Any:
            log = logs.get(id(self))
            if log is not None:
                if name in fields:
                    log.keys.add(name)
                elif name in _WHOLE_READS:
                    log.read_all()
            return base_getattribute(self, name)

        cls = type(
            schema.__name__,
            (schema,),
            {
                "__getattribute__": __getattribute__,
                "__reduce_ex__": __reduce_ex__,
                "__module__": schema.__module__,
                "__qualname__": schema.__qualname__,
                "__alto_logs__": logs,
            },
        )
        _classes[schema] = cls
        return cls


def track(instance: Any, log: ReadLog) -> None:
    """Record ``instance``'s field reads in ``log`` (an instance of a ``tracked_class``)
    until ``untrack``."""
    type(instance).__alto_logs__[id(instance)] = log


def untrack(instance: Any) -> None:
    logs = getattr(type(instance), "__alto_logs__", None)
    if logs is not None:
        logs.pop(id(instance), None)


def plain(view: StateView) -> dict[str, Any]:
    """A view's values as a dict, without counting as a read (for alto's own shipping)."""
    return dict(dict.items(view))


def tracked_input(values: dict[str, Any], schema: type | None, log: ReadLog) -> Any:
    """The state a node gets from ``values``, as LangGraph builds it (``schema(**values)``
    for a model or dataclass, else the dict), recording its reads in ``log``."""
    if schema is None:
        return StateView(values, log)
    instance = tracked_class(schema)(**values)
    track(instance, log)
    return instance
