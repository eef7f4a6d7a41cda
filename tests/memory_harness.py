"""Run an app with memory (a checkpointer) on stock LangGraph and on alto, and compare
what users can see: each call's result, the state, and the thread's checkpoint history.

A *scenario* is a graph and a list of calls on one thread (an input, a resume, an
``update_state``, a time-travel fork ...). ``transcript`` runs the calls, each on the
backend its position asks for, all against one saver: so a thread can be started on
one backend and continued on the other.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import os
import sqlite3
import subprocess
import uuid
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from harness import canonical
from langgraph.checkpoint.base import BaseCheckpointSaver
from langgraph.checkpoint.memory import InMemorySaver

import alto_langgraph

HERE = Path(__file__).resolve().parent

#: the savers every scenario runs against; "postgres" is a real server
#: (tests/services/postgres.sh starts it)
SAVERS = ("memory", "sqlite", "postgres")

_pg_url: str | None = None


def postgres_url() -> str:
    """The test server's connection string ($ALTO_TEST_POSTGRES, or the one the
    service script starts, installing PostgreSQL first where it can)."""
    global _pg_url
    if _pg_url is None:
        _pg_url = (
            os.environ.get("ALTO_TEST_POSTGRES")
            or subprocess.run(
                [str(HERE / "services" / "postgres.sh")], check=True, capture_output=True, text=True
            )
            .stdout.strip()
            .splitlines()[-1]
        )
    return _pg_url


@contextlib.contextmanager
def saver(kind: str, folder: Path) -> Iterator[BaseCheckpointSaver]:
    """A fresh saver of ``kind``, for sync and async calls alike."""
    if kind == "memory":
        yield InMemorySaver()
    elif kind == "sqlite":
        from langgraph.checkpoint.sqlite import SqliteSaver

        conn = sqlite3.connect(folder / f"{uuid.uuid4().hex}.db", check_same_thread=False)
        try:
            yield SqliteSaver(conn)
        finally:
            conn.close()
    elif kind == "postgres":
        from langgraph.checkpoint.postgres import PostgresSaver
        from psycopg import Connection
        from psycopg.rows import dict_row

        with Connection.connect(
            postgres_url(), autocommit=True, prepare_threshold=0, row_factory=dict_row
        ) as conn:
            pg = PostgresSaver(conn)
            pg.setup()
            yield pg
    else:
        raise ValueError(kind)


@contextlib.asynccontextmanager
async def async_saver(kind: str, folder: Path) -> Any:
    """A fresh async saver of ``kind`` (for ``ainvoke`` and friends)."""
    if kind == "memory":
        yield InMemorySaver()
    elif kind == "sqlite":
        from langgraph.checkpoint.sqlite.aio import AsyncSqliteSaver

        async with AsyncSqliteSaver.from_conn_string(str(folder / f"{uuid.uuid4().hex}.db")) as aio:
            yield aio
    elif kind == "postgres":
        from langgraph.checkpoint.postgres.aio import AsyncPostgresSaver

        async with AsyncPostgresSaver.from_conn_string(postgres_url()) as aio:
            await aio.setup()
            yield aio
    else:
        raise ValueError(kind)


#: one call of a scenario: given the app and the thread's config, what it returns
Call = Callable[[Any, dict[str, Any]], Any]


@dataclasses.dataclass
class Scenario:
    build: Callable[[], Any]  # a fresh StateGraph builder (fresh closures)
    calls: list[Call]
    compile_kwargs: dict[str, Any] = dataclasses.field(default_factory=dict)
    #: the calls are coroutines (``ainvoke`` ...)
    is_async: bool = False


def snapshot_view(snap: Any) -> Any:
    """What a user sees of a ``StateSnapshot``, ids and times left out (random per run
    on stock too): values, next, the metadata the loop writes, tasks and interrupts."""
    meta = snap.metadata or {}
    return canonical(
        (
            snap.values,
            snap.next,
            {k: meta.get(k) for k in ("source", "step", "parents")},
            [
                (
                    t.name,
                    t.path,
                    repr(t.error),
                    [i.value for i in t.interrupts],
                    t.result,
                    snapshot_view(t.state) if hasattr(t.state, "next") else canonical(t.state),
                )
                for t in snap.tasks
            ],
            [i.value for i in snap.interrupts],
            snap.parent_config is None,
        )
    )


def history(app: Any, cfg: dict[str, Any]) -> list[Any]:
    return [snapshot_view(s) for s in app.get_state_history(cfg)]


async def ahistory(app: Any, cfg: dict[str, Any]) -> list[Any]:
    return [snapshot_view(s) async for s in app.aget_state_history(cfg)]


def _result(value: Any) -> Any:
    if isinstance(value, dict) and "__interrupt__" in value:
        # tasks of one step that interrupt race to report it, on stock too
        value = {**value, "__interrupt__": sorted(value["__interrupt__"], key=repr)}
    if hasattr(value, "values") and hasattr(value, "next"):
        return snapshot_view(value)
    if isinstance(value, list) and value and hasattr(value[0], "values"):
        return [snapshot_view(v) for v in value]
    return canonical(value)


@contextlib.contextmanager
def compiled(builder: Any, backend: str, alto: dict[str, Any] | None = None, **kwargs: Any) -> Any:
    """``builder`` compiled for ``backend`` ("stock" or "alto", with the alto options
    ``alto``); an alto app runs without falling back to stock (a fallback would compare
    stock with stock) and is closed at the end."""
    if backend == "stock":
        yield builder.compile(**kwargs)
        return
    with warnings.catch_warnings():
        warnings.simplefilter("error", alto_langgraph.AltoFallbackWarning)
        with builder.compile(backend="alto", **(alto or {}), **kwargs) as app:
            yield app


def _raised(exc: Exception) -> Any:
    """An error, as compared between backends (not swallowed)."""
    return ("raised", type(exc).__name__, canonical(str(exc)))


def transcript(
    scenario: Scenario,
    backends: list[str],
    kind: str,
    folder: Path,
    executor: str = "auto",
) -> tuple[list[Any], list[Any]]:
    """Run the scenario's calls, call ``i`` on ``backends[i]`` ("stock" or "alto"), on
    one thread of one fresh saver: each call's result (or error), and the history."""
    apps: dict[str, Any] = {}
    out: list[Any] = []
    cfg = {"configurable": {"thread_id": uuid.uuid4().hex}}

    def app_for(backend: str, checkpointer: Any, stack: contextlib.ExitStack) -> Any:
        if backend not in apps:
            build = compiled(
                scenario.build(),
                backend,
                {"executor": executor},
                checkpointer=checkpointer,
                **scenario.compile_kwargs,
            )
            apps[backend] = stack.enter_context(build)
        return apps[backend]

    with contextlib.ExitStack() as stack:
        if scenario.is_async:

            async def go() -> list[Any]:
                async with async_saver(kind, folder) as cp:
                    for call, backend in zip(scenario.calls, backends, strict=True):
                        try:
                            out.append(_result(await call(app_for(backend, cp, stack), cfg)))
                        except Exception as exc:
                            out.append(_raised(exc))
                    return await ahistory(app_for("stock", cp, stack), cfg)

            hist = asyncio.run(go())
        else:
            with saver(kind, folder) as cp:
                for call, backend in zip(scenario.calls, backends, strict=True):
                    try:
                        out.append(_result(call(app_for(backend, cp, stack), cfg)))
                    except Exception as exc:
                        out.append(_raised(exc))
                hist = history(app_for("stock", cp, stack), cfg)
    return out, hist
