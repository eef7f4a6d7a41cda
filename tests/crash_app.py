"""An app with memory that tests/test_memory.py kills mid-request (SIGKILL) and resumes.

Each node appends its name to a side-effect log as it starts (one line per run), so
the test can tell which steps ran again after the crash. ``b`` is slow: once it has
started and ``c``'s write had time to be saved, the test kills the process.

Run as ``python crash_app.py BACKEND SAVER TARGET THREAD LOG`` (the run to be killed);
``build`` and ``saver`` serve the resuming side too.
"""

from __future__ import annotations

import contextlib
import operator
import sqlite3
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Any, TypedDict


class State(TypedDict, total=False):
    log: Annotated[list, operator.add]


def build(log: Path) -> Any:
    from langgraph.constants import START
    from langgraph.graph import StateGraph

    def node(name: str, pause: float = 0.0) -> Any:
        def run(s: dict) -> dict:
            with log.open("a") as f:
                f.write(name + "\n")
            time.sleep(pause)
            return {"log": [f"{name}:{len(s['log'])}"]}

        return run

    g = StateGraph(State)
    g.add_node("a", node("a"))
    g.add_node("b", node("b", pause=float(_pause_b)))
    g.add_node("c", node("c"))
    g.add_node("d", node("d"))
    g.add_edge(START, "a")
    g.add_edge("a", "b")
    g.add_edge("a", "c")
    g.add_edge(["b", "c"], "d")
    return g


#: b's pause: long in the run that is killed, none when resuming
_pause_b = 0.0


@contextlib.contextmanager
def saver(kind: str, target: str) -> Iterator[Any]:
    """A SqliteSaver on the file ``target``, or a PostgresSaver on the server
    ``target`` names."""
    if kind == "sqlite":
        from langgraph.checkpoint.sqlite import SqliteSaver

        conn = sqlite3.connect(target, check_same_thread=False)
        try:
            yield SqliteSaver(conn)
        finally:
            conn.close()
    else:
        from langgraph.checkpoint.postgres import PostgresSaver
        from psycopg import Connection
        from psycopg.rows import dict_row

        with Connection.connect(
            target, autocommit=True, prepare_threshold=0, row_factory=dict_row
        ) as conn:
            pg = PostgresSaver(conn)
            pg.setup()
            yield pg


def compile_app(backend: str, checkpointer: Any, log: Path) -> Any:
    import alto_langgraph  # noqa: F401  (installs backend=)

    kwargs = {"backend": "alto"} if backend == "alto" else {}
    return build(log).compile(checkpointer=checkpointer, **kwargs)


if __name__ == "__main__":
    backend, kind, target, thread, log = sys.argv[1:6]
    _pause_b = 60.0
    with saver(kind, target) as cp:
        app = compile_app(backend, cp, Path(log))
        app.invoke({"log": []}, {"configurable": {"thread_id": thread}}, durability="sync")
