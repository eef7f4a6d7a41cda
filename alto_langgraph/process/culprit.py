"""Which object inside a value does not pickle, and how the value reaches it.

Pickling is all-or-nothing, and Python 3.11's pickler names no path to the object that
failed. So, once shipping has already failed (never on the way of a call that
pickles), this walks the value the way cloudpickle decomposes it (a function's
globals, closure cells and defaults; an object's ``__reduce_ex__`` state, arguments
and items; containers' items) and descends into the first part that fails to pickle
on its own, down to an object none of whose parts fails: the culprit. Each step uses
the shipment's own pickler, so what is shipped by reference (module functions,
classes) is passed over as it would be. The cost, paid only on failure, is about
depth x size pickles.
"""

from __future__ import annotations

import functools
import types
from collections.abc import Callable, Iterator
from typing import Any


def _code_globals(co: types.CodeType) -> set[str]:
    names = set(co.co_names)
    for const in co.co_consts:
        if isinstance(const, types.CodeType):
            names |= _code_globals(const)
    return names


Edge = tuple[str, Any]  # (kind, name): global/closure/default/self/attr/item/index/arg/class
MAX_DEPTH = 40


def _state_attrs(state: Any) -> Iterator[Edge]:
    if isinstance(state, tuple) and len(state) == 2:  # (dict, slots)
        for part in state:
            yield from _state_attrs(part)
    elif isinstance(state, dict):
        for key, value in state.items():
            # pydantic v2 __getstate__: {'__dict__': fields, '__pydantic_private__': ...}
            if key in ("__dict__", "__pydantic_private__", "__pydantic_extra__") and isinstance(
                value, dict
            ):
                yield from _state_attrs(value)
            else:
                yield ("attr", key), value
    elif state is not None:
        yield ("attr", "__getstate__()"), state


def _children(obj: Any) -> Iterator[tuple[Edge, Any]]:
    """The parts of ``obj`` that pickling it pickles, each with how ``obj`` holds it."""
    if isinstance(obj, types.FunctionType):
        code = obj.__code__
        for name in sorted(_code_globals(code)):
            if name in obj.__globals__:
                yield ("global", name), obj.__globals__[name]
        for name, cell in zip(code.co_freevars, obj.__closure__ or (), strict=False):
            try:
                yield ("closure", name), cell.cell_contents
            except ValueError:  # empty cell
                pass
        defaults = obj.__defaults__ or ()
        names = code.co_varnames[code.co_argcount - len(defaults) : code.co_argcount]
        for name, value in zip(names, defaults, strict=False):
            yield ("default", name), value
        for name, value in (obj.__kwdefaults__ or {}).items():
            yield ("default", name), value
        for name, value in vars(obj).items():
            yield ("attr", name), value
        return
    if isinstance(obj, types.MethodType):
        yield ("self", "self"), obj.__self__
        yield ("attr", "__func__"), obj.__func__
        return
    if isinstance(obj, functools.partial):
        yield ("attr", "func"), obj.func
        for i, arg in enumerate(obj.args):
            yield ("index", i), arg
        for key, value in obj.keywords.items():
            yield ("item", key), value
        return
    if isinstance(obj, dict):
        for key, value in obj.items():
            yield ("item", key), value
        return
    if isinstance(obj, (list, tuple, set, frozenset)):
        for i, value in enumerate(obj):
            yield ("index", i), value
        return
    if isinstance(obj, type):  # a class pickled by value (a script's): its namespace
        for name, value in vars(obj).items():
            if not name.startswith("__"):
                yield ("attr", name), value
        return
    if isinstance(obj, types.ModuleType):
        return
    try:
        rv = obj.__reduce_ex__(5)
    except Exception:  # a C object that refuses outright: a leaf
        return
    if not isinstance(rv, tuple):
        return
    args = rv[1] if len(rv) > 1 else ()
    if len(rv) > 2:
        yield from _state_attrs(rv[2])
    for i, value in enumerate(rv[3] if len(rv) > 3 and rv[3] is not None else ()):
        yield ("index", i), value
    for key, value in rv[4] if len(rv) > 4 and rv[4] is not None else ():
        yield ("item", key), value
    for i, value in enumerate(args or ()):
        if i == 0 and isinstance(value, type):  # copyreg.__newobj__(cls, ...)
            yield ("class", value.__qualname__), value
        else:
            yield ("arg", i), value


def find_unpicklable(
    obj: Any, pickle: Callable[[Any], bytes]
) -> tuple[list[tuple[Edge, Any]], Any, BaseException] | None:
    """``(path, culprit, error)``: the edges from ``obj`` to the innermost object that
    does not pickle (each with the object it reaches), or None if ``obj`` pickles."""
    seen: set[int] = set()

    def fails(x: Any) -> BaseException | None:
        try:
            pickle(x)
        except Exception as exc:  # noqa: BLE001 - any pickling failure
            return exc
        return None

    def walk(x: Any, path: list[tuple[Edge, Any]], err: BaseException) -> Any:
        if len(path) < MAX_DEPTH:
            for edge, child in _children(x):
                if id(child) in seen:
                    continue
                seen.add(id(child))
                child_err = fails(child)
                if child_err is not None:
                    return walk(child, [*path, (edge, child)], child_err)
        return path, x, err

    err = fails(obj)
    if err is None:
        return None
    seen.add(id(obj))
    return walk(obj, [], err)


def _type_name(x: Any) -> str:
    t = type(x)
    mod = t.__module__
    return t.__qualname__ if mod in ("builtins", "__main__") else f"{mod}.{t.__qualname__}"


def _where(fn: Any) -> str:
    code = getattr(fn, "__code__", None)
    if code is None:
        return fn.__qualname__
    return f"{fn.__qualname__} ({code.co_filename.rsplit('/', 1)[-1]}:{code.co_firstlineno})"


def _chain(edges: list[Edge]) -> str:
    out = ""
    for kind, name in edges:
        if kind == "attr":
            out += f".{name}"
        elif kind in ("item", "index"):
            out += f"[{name!r}]"
        elif kind == "arg":
            out += f".<reduce arg {name}>"
        elif kind == "class":
            out += f".<class {name}>"
        else:
            out += f".<{kind} {name}>"
    return out.lstrip(".")


_REFERENCE_KINDS = {
    "global": "global",
    "closure": "closure variable",
    "default": "default",
    "self": "its bound object",
}


def name_unpicklable(obj: Any, pickle: Callable[[Any], bytes]) -> str | None:
    """``obj`` (which ``pickle`` refused), in words: what it refers to that does not
    pickle, e.g. "function agent (app.py:40) refers to global 'llm' (ChatOpenAI) whose
    attribute client._lock is a _thread.RLock"; None if it pickles."""
    found = find_unpicklable(obj, pickle)
    if found is None:
        return None
    path, culprit, err = found
    leaf = f"is a {_type_name(culprit)}, which cannot be pickled ({err})"
    # anchor on the last name node code uses (a global, closure variable or default)
    anchor = max(
        (i for i, ((kind, _), _) in enumerate(path) if kind in _REFERENCE_KINDS), default=None
    )
    if anchor is None:
        where = _chain([e for e, _ in path])
        return f"{where} {leaf}" if where else f"it {leaf}"
    (kind, name), value = path[anchor]
    owner = path[anchor - 1][1] if anchor > 0 else obj
    rest = _chain([e for e, _ in path[anchor + 1 :]])
    head = (
        f"function {_where(owner)} refers to {_REFERENCE_KINDS[kind]} {name!r} "
        f"({_type_name(value)})"
    )
    if not rest:
        return f"{head}, which cannot be pickled ({err})"
    noun = "item" if rest.startswith("[") else "attribute"
    return f"{head} whose {noun} {rest} {leaf}"
