"""Where flagged items are kept: what model assertions (``assertions.py``) fired on.

One SQLite file by default: ``$ALTO_FLAGS``, or ``alto_langgraph/flags.sqlite`` under
``$XDG_DATA_HOME`` (``~/.local/share``). It is created on the first flag, so an app
whose assertions always hold writes nothing. Each record is one firing of one
assertion: when, which app, thread and request, the item's ancestry (alto's), the node,
the assertion, its severity and message, the node's input and output as JSON (values
JSON cannot hold are written as their ``repr``), a proposed weak label, and the label
a person gave it (``set_label``). Several processes may write one file (WAL mode).
"""

from __future__ import annotations

import dataclasses
import json
import os
import sqlite3
import threading
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import IO, Any

_SCHEMA = """
CREATE TABLE IF NOT EXISTS flags (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    time REAL NOT NULL,
    app TEXT,
    thread_id TEXT,
    request_id TEXT,
    ancestry TEXT,
    node TEXT NOT NULL,
    assertion TEXT NOT NULL,
    severity TEXT NOT NULL,
    message TEXT,
    input TEXT,
    output TEXT,
    weak_label TEXT,
    label TEXT
)
"""
#: the columns a record has, in order
COLUMNS = (
    "id",
    "time",
    "app",
    "thread_id",
    "request_id",
    "ancestry",
    "node",
    "assertion",
    "severity",
    "message",
    "input",
    "output",
    "weak_label",
    "label",
)
#: those held as JSON
_JSON = frozenset({"ancestry", "input", "output", "weak_label", "label"})
#: what ``flags`` and ``export_jsonl`` filter on
FILTERS = ("app", "thread_id", "request_id", "node", "assertion", "severity")


def default_path() -> Path:
    """The store an app uses unless told otherwise."""
    if os.environ.get("ALTO_FLAGS"):
        return Path(os.environ["ALTO_FLAGS"])
    data = os.environ.get("XDG_DATA_HOME") or os.path.join(Path.home(), ".local", "share")
    return Path(data) / "alto_langgraph" / "flags.sqlite"


def to_json(value: Any) -> str:
    """``value`` as JSON: pydantic models (LangChain messages) by their fields,
    dataclasses as dicts, anything else JSON cannot hold as its repr."""

    def fallback(v: Any) -> Any:
        if hasattr(v, "model_dump"):
            try:
                return {"type": type(v).__name__, **v.model_dump()}
            except Exception:
                pass
        if dataclasses.is_dataclass(v) and not isinstance(v, type):
            return dataclasses.asdict(v)
        if isinstance(v, (set, frozenset, tuple)):
            return list(v)
        if isinstance(v, Mapping):
            return dict(v)
        return repr(v)

    return json.dumps(value, default=fallback, ensure_ascii=False)


class FlagStore:
    """A SQLite file of flagged items, safe to share between threads and processes."""

    def __init__(self, path: str | os.PathLike[str] | None = None) -> None:
        self.path = Path(path) if path is not None else default_path()
        self._lock = threading.Lock()
        self._conn: sqlite3.Connection | None = None
        self._pid = 0

    def __repr__(self) -> str:
        return f"FlagStore({str(self.path)!r})"

    def _connect(self) -> sqlite3.Connection:
        if self._conn is None or self._pid != os.getpid():  # not a connection across fork
            self.path.parent.mkdir(parents=True, exist_ok=True)
            conn = sqlite3.connect(self.path, check_same_thread=False, timeout=30)
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")  # WAL: durable across app crashes
            conn.execute(_SCHEMA)
            conn.commit()
            self._conn, self._pid = conn, os.getpid()
        return self._conn

    def record(self, **fields: Any) -> int:
        """Keep one flag (keys of ``COLUMNS`` but ``id``; ``time`` defaults to now);
        its id."""
        unknown = set(fields) - set(COLUMNS[1:])
        if unknown:
            raise ValueError(f"FlagStore.record: unknown field(s) {', '.join(sorted(unknown))}")
        row = {"time": time.time(), **fields}
        names = list(row)
        values = [to_json(row[n]) if n in _JSON and row[n] is not None else row[n] for n in names]
        with self._lock:
            conn = self._connect()
            cur = conn.execute(
                f"INSERT INTO flags ({', '.join(names)}) VALUES ({', '.join('?' * len(names))})",
                values,
            )
            conn.commit()
            return int(cur.lastrowid or 0)

    def flags(self, *, since: float | None = None, **filters: Any) -> list[dict[str, Any]]:
        """The flags kept, oldest first, those matching every filter given (``FILTERS``;
        ``since``: a time)."""
        return list(self._rows(since, filters))

    def _rows(self, since: float | None, filters: Mapping[str, Any]) -> Iterator[dict[str, Any]]:
        unknown = set(filters) - set(FILTERS)
        if unknown:
            raise ValueError(
                f"flag filters: unknown {', '.join(sorted(unknown))}; known: {', '.join(FILTERS)}"
            )
        where = [f"{k} = ?" for k, v in filters.items() if v is not None]
        args = [v for v in filters.values() if v is not None]
        if since is not None:
            where.append("time >= ?")
            args.append(since)
        if not self.path.exists():
            return
        sql = f"SELECT {', '.join(COLUMNS)} FROM flags"
        if where:
            sql += " WHERE " + " AND ".join(where)
        with self._lock:
            rows = self._connect().execute(sql + " ORDER BY id", args).fetchall()
        for row in rows:
            yield {
                c: json.loads(v) if c in _JSON and v is not None else v
                for c, v in zip(COLUMNS, row, strict=True)
            }

    def export_jsonl(self, out: IO[str], *, since: float | None = None, **filters: Any) -> int:
        """Write the matching flags to ``out``, one JSON object a line (for labelling);
        how many."""
        n = 0
        for row in self._rows(since, filters):
            out.write(json.dumps(row, ensure_ascii=False) + "\n")
            n += 1
        return n

    def set_label(self, flag_id: int, label: Any) -> None:
        """Write a person's label on flag ``flag_id`` (any JSON value)."""
        with self._lock:
            conn = self._connect()
            cur = conn.execute("UPDATE flags SET label = ? WHERE id = ?", (to_json(label), flag_id))
            conn.commit()
        if cur.rowcount != 1:
            raise KeyError(f"no flag with id {flag_id} in {self.path}")

    def close(self) -> None:
        with self._lock:
            if self._conn is not None and self._pid == os.getpid():
                self._conn.close()
            self._conn = None
