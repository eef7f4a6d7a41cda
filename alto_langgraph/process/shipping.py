"""What crosses a process boundary, and the errors when something cannot.

Node code, inputs and outputs travel pickled with cloudpickle (closures and lambdas
included). A task's config cannot travel whole (callbacks, the loop's channels and
stream), so ``ship_call`` sends what node code can read: configurable values,
tags, metadata, the runtime context and execution info, and whether a stream writer
listens; ``open_call`` rebuilds a config around that in the stage instance, whose
stream writer, callbacks and ``@task`` calls are relayed to the caller (``relay.py``).
"""

from __future__ import annotations

import asyncio
import functools
import importlib
import io
import sys
import traceback
import types
from typing import Any, Protocol

import cloudpickle

from .. import streams
from .._langgraph import (
    CONF,
    CONFIG_KEY_CALL,
    CONFIG_KEY_CHECKPOINT_NS,
    CONFIG_KEY_CHECKPOINTER,
    CONFIG_KEY_NODE_ERROR,
    CONFIG_KEY_READ,
    CONFIG_KEY_READ_STATE,
    CONFIG_KEY_RUNTIME,
    CONFIG_KEY_SCRATCHPAD,
    CONFIG_KEY_SEND,
    CONFIG_KEY_TASK_ID,
    RefusingSaver,
    RunControl,
    Runtime,
    new_scratchpad,
    no_op_heartbeat,
    no_op_stream_writer,
    read_task_state,
)
from ..config_keys import CONFIG_KEY_ANCESTRY, CONFIG_KEY_YIELD
from ..errors import ShippingError, StageError
from ..views import ReadLog, StateView, plain
from . import relay
from .culprit import name_unpicklable


def _sentinel(module: str, name: str) -> Any:
    return getattr(importlib.import_module(module), name)


def _main_sentinel(name: str) -> Any:
    """A script's ``object()`` sentinel: the script's own where it runs, else one object
    per name for the whole process, so identity holds within each process."""
    main = sys.modules.get("__main__")
    value = getattr(main, name, None)
    if type(value) is object:
        return value
    return _main_sentinels.setdefault(name, object())


_main_sentinels: dict[str, object] = {}
_sentinels: dict[int, tuple[str, str]] = {}
_sentinels_seen = 0
#: libraries whose module-level singletons (sentinels such as ``MISSING`` or
#: ``DEFAULT_BOUND``) are compared by identity
_BY_REFERENCE = ("langgraph", "langchain_core")
_PLAIN = (
    type,
    types.ModuleType,
    types.FunctionType,
    types.BuiltinFunctionType,
    str,
    bytes,
    int,
    float,
    bool,
    type(None),
    tuple,
    list,
    dict,
    set,
    frozenset,
)


def _sentinel_ref(obj: object) -> tuple[str, str] | None:
    """``(module, name)`` of a module-level singleton: an ``object()`` sentinel of any
    module, or an UPPER_CASE constant of a LangGraph/LangChain module (``MISSING``,
    ``DEFAULT_BOUND``). Such objects are compared by identity, so they must arrive as
    the receiving process's own object, not as a copy (a copied ``DEFAULT_BOUND``
    makes LangGraph run a subgraph's input as a task). Module *state* (lower case,
    e.g. a global cache) travels by value like anything else."""
    global _sentinels_seen
    ref = _sentinels.get(id(obj))
    if ref is None and len(sys.modules) != _sentinels_seen:
        _sentinels_seen = len(sys.modules)
        for mod_name, mod in list(sys.modules.items()):
            library = mod_name.split(".", 1)[0] in _BY_REFERENCE
            for attr, value in list(getattr(mod, "__dict__", {}).items()):
                if type(value) is object or (
                    library and attr.isupper() and not isinstance(value, _PLAIN)
                ):
                    _sentinels.setdefault(id(value), (mod_name, attr))
        ref = _sentinels.get(id(obj))
    # the table is keyed by id: make sure the name still holds this very object
    if ref is not None and getattr(sys.modules.get(ref[0]), ref[1], None) is not obj:
        del _sentinels[id(obj)]
        return None
    return ref


def _cached(func: Any, maxsize: int | None, typed: bool) -> Any:
    return functools.lru_cache(maxsize=maxsize, typed=typed)(func)


class _Pickler(cloudpickle.Pickler):
    #: a state view pickled by alto's plumbing (a callback's arguments), not by node
    #: code, is not a read of it
    quiet = False

    def reducer_override(self, obj: Any) -> Any:
        if type(obj) is streams.StreamRef:  # its chunks follow as messages of the call
            return (streams.arrived, (obj.sid,))
        if self.quiet and type(obj) is StateView:
            return (dict, (plain(obj),))
        if not isinstance(obj, _PLAIN) and (ref := _sentinel_ref(obj)) is not None:
            if ref[0] == "__main__":  # a script's: the worker's __main__ is not the script
                return (_main_sentinel, (ref[1],))
            return (_sentinel, ref)
        if isinstance(obj, BaseException) and type(obj).__reduce__ is BaseException.__reduce__:
            # the default reduce calls cls(*args) on arrival, which fails for exceptions
            # with an __init__ of their own (LangGraph's NodeTimeoutError among them)
            state = dict(vars(obj)) if hasattr(obj, "__dict__") else {}
            return (_rebuild_exception, (type(obj), obj.args, state))
        if isinstance(obj, _LRU_WRAPPER) and obj.__module__ == "__main__":
            # pickle ships an @cache/@lru_cache function by reference, which a worker
            # cannot resolve for a script's own; send the function, cache it there
            params = obj.cache_parameters()
            return (_cached, (obj.__wrapped__, params["maxsize"], params["typed"]))
        return super().reducer_override(obj)


_LRU_WRAPPER = type(functools.lru_cache(lambda: None))


def _pickle(value: Any, quiet: bool = False) -> bytes:
    buf = io.BytesIO()
    pickler = _Pickler(buf, protocol=5)
    pickler.quiet = quiet
    pickler.dump(value)
    return buf.getvalue()


def _dumps(value: Any, what: str, quiet: bool = False) -> bytes:
    try:
        return _pickle(value, quiet)
    except Exception as exc:
        culprit = name_unpicklable(value, _pickle) or f"{type(value).__name__}: {exc}"
        raise ShippingError(
            f"alto: {what} cannot be pickled to pass between the app and its worker "
            f"processes: {culprit}. Keep the node in the app process (the default "
            "placement, or stages={NODE: {'process': False}}), or make the object "
            "picklable, e.g. create it inside the node"
        ) from exc


def ship_code(stage: str, node: Any) -> bytes:
    return _dumps(node, f"the code of node {stage!r}")


def dumps_value(value: Any, what: str, quiet: bool = False) -> bytes:
    """``value`` pickled; ``quiet``: state views in it are not read (alto's plumbing)."""
    return _dumps(value, what, quiet)


def _rebuild_exception(cls: type[BaseException], args: tuple, state: dict) -> BaseException:
    try:  # as pickle would: built-in exceptions keep their fields in __init__
        exc = cls(*args)
    except Exception:  # an __init__ of its own that takes other arguments
        exc = cls.__new__(cls, *args)
        exc.args = args
    if hasattr(exc, "__dict__"):
        vars(exc).update(state)
    return exc


def dumps_error(exc: BaseException) -> bytes:
    """``exc`` pickled so that it unpickles as itself, or else a ``StageError`` for it.
    Attributes set on it that its own pickling drops travel too (LangGraph marks a
    resume value that fails its ``response_schema`` that way)."""
    try:
        data = _pickle(exc)
        loaded = cloudpickle.loads(data)  # what it holds may still fail to load
    except Exception:
        data = None
    if data is not None:
        lost = {k: v for k, v in getattr(exc, "__dict__", {}).items() if not hasattr(loaded, k)}
        if not lost:
            return data
        try:
            with_lost = _pickle(_Marked(exc, lost))
            cloudpickle.loads(with_lost)
            return with_lost
        except Exception:  # an attribute that does not travel: the exception does
            return data
    text = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
    return _pickle(StageError(type(exc).__qualname__, str(exc), text))


def dumps_stream_event(sid: str, event: str, value: Any, what: str) -> bytes:
    """An event of a stream (``streams.py``), as it travels between processes: a
    failure's exception as a node's would (``dumps_error``)."""
    if event == streams.FAIL:
        value = dumps_error(value)
    return dumps_value((sid, event, value), what)


def loads_stream_event(payload: Any) -> tuple[str, str, Any]:
    """``dumps_stream_event``'s (sid, event, value)."""
    sid, event, value = loads(payload)
    if event == streams.FAIL:
        value = loads(value)
    return sid, event, value


class _Marked:
    """An exception with the attributes its own pickling drops (see ``dumps_error``)."""

    def __init__(self, exc: BaseException, attrs: dict[str, Any]) -> None:
        self.exc = exc
        self.attrs = attrs

    def __reduce__(self) -> Any:
        return (_marked, (self.exc, self.attrs))


def _marked(exc: BaseException, attrs: dict[str, Any]) -> BaseException:
    for key, value in attrs.items():
        setattr(exc, key, value)
    return exc


def _no_app_checkpointer(stage: str) -> ShippingError:
    """What a graph invoked inside a node on a worker process meets when it uses the
    checkpointer: the run's stays in the app process (a graph LangGraph detects in the
    node's code sends such a run to stock LangGraph instead)."""
    return ShippingError(
        f"alto: node {stage!r} runs in a worker process and invoked a graph that keeps "
        "its memory in the run's checkpointer, which stays in the app process: add that "
        "graph to the parent as a node (a subgraph), or keep this node in the app process "
        f"(stages={{{stage!r}: {{'process': False}}}})"
    )


def loads(payload: Any) -> Any:
    return cloudpickle.loads(payload)


def ship_call(
    stage: str, value: Any, config: dict[str, Any], streamed: bool = False, sync: bool = False
) -> bytes:
    """A call of ``stage``'s node: its input and what the instance rebuilds its config
    from; ``streamed``: the caller reads the output chunk by chunk; ``sync``: the caller
    ran the node synchronously (``invoke``/``stream``), so its sync code runs."""
    conf = config.get(CONF) or {}
    runtime = conf.get(CONFIG_KEY_RUNTIME)
    pad = conf.get(CONFIG_KEY_SCRATCHPAD)
    shipped = {
        "tags": list(config.get("tags") or ()),
        "metadata": dict(config.get("metadata") or {}),
        "recursion_limit": config.get("recursion_limit", 25),
        # LangGraph's own keys start with "__": the loop's channels, callbacks, hooks
        "configurable": {k: v for k, v in conf.items() if not k.startswith("__")},
        "task_id": conf.get(CONFIG_KEY_TASK_ID, ""),
        "ns": conf.get(CONFIG_KEY_CHECKPOINT_NS, ""),
        "ancestry": conf.get(CONFIG_KEY_ANCESTRY, ()),
        "step": pad.step if pad is not None else 0,
        "stop": pad.stop if pad is not None else 0,
        "stage": stage,
        # the run's checkpointer stays here: a graph the node invokes must not run
        # without it there (it would keep no memory)
        "checkpointer": conf.get(CONFIG_KEY_CHECKPOINTER) is not None,
        # a resumed task's answers to its interrupts; a Command(resume=value) for no
        # interrupt id in particular is taken by this task (the loop allows one only
        # while one interrupt is pending, and the task that raised it runs again)
        "resume": list(pad.resume) if pad is not None else [],
        "null_resume": pad.get_null_resume(True) if pad is not None else None,
        "runtime": None,
        "writer": False,
        "heartbeat": False,
        "callbacks": relay.callbacks_to_ship(config.get("callbacks")),
        "call": CONFIG_KEY_CALL in conf,
        "node_error": conf.get(CONFIG_KEY_NODE_ERROR),
        "streamed": streamed,
        "sync": sync,
        # a streaming node's task: its items come back as they are yielded
        "yields": dict(sink.folds) if (sink := conf.get(CONFIG_KEY_YIELD)) else None,
        # the state a ToolNode reads when its Send payload is a list of tool calls
        # (InjectedState, ToolRuntime.state): read here, at the task's step. Read
        # lazily from the instance it would deadlock: ToolNode reads it synchronously
        # on the instance's event loop, which is the thread that takes the reply.
        "state": read_task_state(conf) if _is_tool_calls(value) else None,
        # a task run ahead on a view of the state: the instance records what it reads
        "view": isinstance(value, StateView),
    }
    if shipped["view"]:
        value = plain(value)
    if runtime is not None:
        shipped["runtime"] = {
            "context": runtime.context,
            "previous": runtime.previous,
            "execution_info": runtime.execution_info,
            "server_info": runtime.server_info,
        }
        control = getattr(runtime, "control", None)
        # a drain requested later reaches the instance as a DRAIN message (remote.py)
        drain = (control.drain_requested, control.drain_reason) if control is not None else None
        shipped["drain"] = drain
        shipped["writer"] = runtime.stream_writer is not no_op_stream_writer
        shipped["heartbeat"] = runtime.heartbeat is not no_op_heartbeat
        shipped["store"] = runtime.store is not None
    try:
        return _pickle((value, shipped))
    except Exception:
        _dumps(value, f"the input of node {stage!r}")
        if runtime is not None:
            _dumps(runtime.context, f"the runtime context of node {stage!r}")
        _dumps(shipped["configurable"], f"the configurable values of node {stage!r}")
        _dumps(shipped["state"], f"the graph state node {stage!r} reads")
        raise


class Link(Protocol):
    """How a call in a stage instance reaches its caller (see ``relay.py``)."""

    loop: asyncio.AbstractEventLoop  # the instance's event loop

    def emit(self, chunk: Any) -> None: ...
    def callback(self, name: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None: ...
    def call(self, func: Any, input: Any, **kwargs: Any) -> Any: ...
    def store(self, ops: list[Any]) -> Any: ...
    def heartbeat(self) -> None: ...
    def task_writes(self, writes: Any) -> None: ...
    def yields(self, folds: dict[str, str], task_id: str) -> Any: ...


def open_call(payload: bytes, link: Link) -> tuple[Any, dict[str, Any], bool, bool]:
    """The input and config of a call, in the stage instance, whether the caller
    streams the node's output, and whether it ran the node synchronously."""
    value, shipped = cloudpickle.loads(payload)
    if shipped["view"]:  # the instance sends what the node read back (worker.py)
        value = StateView(value, ReadLog())
    conf = dict(shipped["configurable"])
    task_id, ns = shipped["task_id"], shipped["ns"]
    conf[CONFIG_KEY_TASK_ID] = task_id
    conf[CONFIG_KEY_CHECKPOINT_NS] = ns
    conf[CONFIG_KEY_ANCESTRY] = shipped["ancestry"]
    conf[CONFIG_KEY_SCRATCHPAD] = new_scratchpad(
        task_id, ns, shipped["step"], shipped["stop"], shipped["resume"], shipped["null_resume"]
    )
    rt = shipped["runtime"]
    if rt is not None:
        writer = link.emit if shipped["writer"] else no_op_stream_writer
        beat = link.heartbeat if shipped["heartbeat"] else no_op_heartbeat
        store = relay.RelayedStore(link.store, link.loop) if shipped.get("store") else None
        runtime = Runtime(stream_writer=writer, heartbeat=beat, store=store, **rt)
        if shipped.get("drain") is not None:
            control = RunControl()
            requested, reason = shipped["drain"]
            if requested:
                control.request_drain(reason)
            runtime = runtime.override(control=control)
        conf[CONFIG_KEY_RUNTIME] = runtime
    conf[CONFIG_KEY_SEND] = link.task_writes
    if shipped["checkpointer"]:
        conf[CONFIG_KEY_CHECKPOINTER] = RefusingSaver(
            functools.partial(_no_app_checkpointer, shipped["stage"])
        )
    if shipped["call"]:
        conf[CONFIG_KEY_CALL] = link.call
    if shipped["node_error"] is not None:
        conf[CONFIG_KEY_NODE_ERROR] = shipped["node_error"]
    if shipped["yields"] is not None:
        conf[CONFIG_KEY_YIELD] = link.yields(shipped["yields"], task_id)
    if shipped["state"] is not None:
        conf[CONFIG_KEY_READ_STATE] = functools.partial(_identity, shipped["state"])
        conf[CONFIG_KEY_READ] = _StateRead(shipped["state"])
    config: dict[str, Any] = {
        "tags": shipped["tags"],
        "metadata": shipped["metadata"],
        "recursion_limit": shipped["recursion_limit"],
        "configurable": conf,
        "callbacks": None,
    }
    if shipped["callbacks"] is not None:
        config["callbacks"] = relay.instance_callbacks(shipped["callbacks"], link.callback)
    return value, config, shipped["streamed"], shipped["sync"]


def _is_tool_calls(value: Any) -> bool:
    """A Send payload that is a list of tool calls: ToolNode then reads the graph state
    through its config (langgraph.prebuilt's ``ToolNode._extract_state``)."""
    return (
        isinstance(value, list)
        and bool(value)
        and isinstance(value[-1], dict)
        and value[-1].get("type") == "tool_call"
    )


def _identity(value: Any) -> Any:
    return value


class _StateRead:
    """``CONFIG_KEY_READ`` over a state read in the app: as LangGraph's reader (a
    ``functools.partial`` whose ``args[1]`` holds the channels), for a LangGraph that
    has no ``CONFIG_KEY_READ_STATE``."""

    def __init__(self, state: Any) -> None:
        self.state = state
        self.args = (None, dict(state) if isinstance(state, dict) else {})

    def __call__(self, select: Any, fresh: bool = False) -> Any:
        if isinstance(select, str):
            return self.state[select]
        return {k: self.state[k] for k in select if k in self.state}
