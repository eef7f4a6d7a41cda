"""Where flagged items are kept: what model assertions (``assertions.py``) fired on.

One SQLite file by default: ``$ALTO_FLAGS``, or ``alto_langgraph/flags.sqlite`` under
``$XDG_DATA_HOME`` (``~/.local/share``); or any database, by a SQLAlchemy URL
(PostgreSQL is tested). A file is created on the first flag, so an app
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
import re
import sqlite3
import threading
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import IO, Any

from langgraph.types import Send

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
#: those every record has (the rest may be null)
_REQUIRED = frozenset({"time", "node", "assertion", "severity"})
#: what ``flags`` and ``export_jsonl`` filter on
FILTERS = ("app", "thread_id", "request_id", "node", "assertion", "severity")
#: each table's columns after its ``id``: (name, SQL type, required). ``observations``:
#: what thread-scope consistency assertions observed, turn by turn (key and attrs as
#: JSON; ``ns`` and ``step`` order them within the thread)
_TABLES: dict[str, tuple[tuple[str, str, bool], ...]] = {
    "flags": tuple((c, "REAL" if c == "time" else "TEXT", c in _REQUIRED) for c in COLUMNS[1:]),
    "observations": (
        ("time", "REAL", True),
        *((c, "TEXT", True) for c in ("app", "assertion", "thread_id", "ns")),
        ("step", "INTEGER", True),
        ("key", "TEXT", True),
        ("attrs", "TEXT", True),
    ),
}


def _schema(table: str) -> str:
    columns = ", ".join(
        f"{c} {kind}{' NOT NULL' if required else ''}" for c, kind, required in _TABLES[table]
    )
    return f"CREATE TABLE IF NOT EXISTS {table} (id INTEGER PRIMARY KEY AUTOINCREMENT, {columns})"


def default_path() -> Path:
    """The store an app uses unless told otherwise."""
    if os.environ.get("ALTO_FLAGS"):
        return Path(os.environ["ALTO_FLAGS"])
    data = os.environ.get("XDG_DATA_HOME") or os.path.join(Path.home(), ".local", "share")
    return Path(data) / "alto_langgraph" / "flags.sqlite"


def to_json(value: Any) -> str:
    """``value`` as JSON: pydantic models (LangChain messages) by their fields,
    dataclasses (a ``Command``) as dicts, a ``Send`` as its node and arg, anything
    else JSON cannot hold as its repr."""

    def fallback(v: Any) -> Any:
        if hasattr(v, "model_dump"):
            try:
                return {"type": type(v).__name__, **v.model_dump()}
            except Exception:
                pass
        if isinstance(v, Send):  # an item a @streaming node yielded
            return {"type": "Send", "node": v.node, "arg": v.arg}
        if dataclasses.is_dataclass(v) and not isinstance(v, type):
            return {f.name: getattr(v, f.name) for f in dataclasses.fields(v)}
        if isinstance(v, (set, frozenset, tuple)):
            return list(v)
        if isinstance(v, Mapping):
            return dict(v)
        return repr(v)

    try:
        return json.dumps(value, default=fallback, ensure_ascii=False)
    except (TypeError, ValueError, RecursionError):  # circular, or a field that resists
        return json.dumps(repr(value), ensure_ascii=False)


class FlagStore:
    """The flagged items of an app: a SQLite file (a path), or any database SQLAlchemy
    reaches (a URL such as ``postgresql+psycopg://user@host/db``, with the ``sqlalchemy``
    package and the URL's driver installed). Safe to share between threads and
    processes."""

    def __init__(self, where: str | os.PathLike[str] | None = None) -> None:
        self.url = where if isinstance(where, str) and "://" in where else None
        self.path = None if self.url else Path(where) if where is not None else default_path()
        self._db: _SQLite | _SQLAlchemy | None = None
        self._pid = 0
        self._lock = threading.Lock()

    @property
    def where(self) -> str:
        """The file or the URL (its password left out)."""
        if self.url is None:
            return str(self.path)
        return re.sub(r"(://[^:/@]*:)[^@]*@", r"\1***@", self.url)

    def __repr__(self) -> str:
        return f"FlagStore({self.where!r})"

    def __reduce__(self) -> Any:
        # shipped inside node code (a graph with assertions run in a worker): the same
        # store, opened afresh there
        return (FlagStore, (self.url or self.path,))

    def _database(self) -> _SQLite | _SQLAlchemy:
        with self._lock:
            if self._db is None or self._pid != os.getpid():  # no connection across fork
                self._db = _SQLAlchemy(self.url) if self.url else _SQLite(self.path)
                self._pid = os.getpid()
            return self._db

    def record(self, **fields: Any) -> int:
        """Keep one flag (keys of ``COLUMNS`` but ``id``; ``time`` defaults to now);
        its id."""
        unknown = set(fields) - set(COLUMNS[1:])
        if unknown:
            raise ValueError(f"FlagStore.record: unknown field(s) {', '.join(sorted(unknown))}")
        row = {"time": time.time(), **fields}
        row = {k: to_json(v) if k in _JSON and v is not None else v for k, v in row.items()}
        return self._database().insert(row)

    def observe(
        self, *, app: str, assertion: str, thread_id: str, ns: str, step: int, key: Any, attrs: Any
    ) -> None:
        """Keep what a thread-scope consistency assertion observed at a step of a thread."""
        row = {"time": time.time(), "app": app, "assertion": assertion, "thread_id": thread_id}
        row |= {"ns": ns, "step": step, "key": to_json(key), "attrs": to_json(attrs)}
        self._database().insert(row, table="observations")

    def observed(
        self, *, app: str, assertion: str, thread_id: str, ns: str, before: int, key: Any
    ) -> list[str]:
        """The attributes (as JSON) observed for ``key`` in the thread before step
        ``before`` (of namespace ``ns``), oldest first."""
        if self.path is not None and not self.path.exists():
            return []
        rows, _ = self._database().run(
            "SELECT attrs FROM observations WHERE app = :app AND assertion = :assertion "
            "AND thread_id = :thread_id AND ns = :ns AND step < :before AND key = :key "
            "ORDER BY id",
            {
                "app": app,
                "assertion": assertion,
                "thread_id": thread_id,
                "ns": ns,
                "before": before,
                "key": to_json(key),
            },
        )
        return [r[0] for r in rows]

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
        given = {k: v for k, v in filters.items() if v is not None}
        where = [f"{k} = :{k}" for k in given]
        if since is not None:
            where.append("time >= :since")
            given["since"] = since
        if self.path is not None and not self.path.exists():
            return  # nothing flagged yet: reading makes no file
        sql = f"SELECT {', '.join(COLUMNS)} FROM flags"
        if where:
            sql += " WHERE " + " AND ".join(where)
        rows, _ = self._database().run(sql + " ORDER BY id", given)
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
        if self.path is not None and not self.path.exists():
            raise KeyError(f"no flag with id {flag_id} in {self.where} (it holds none)")
        _, count = self._database().run(
            "UPDATE flags SET label = :label WHERE id = :id",
            {"label": to_json(label), "id": flag_id},
        )
        if count != 1:
            raise KeyError(f"no flag with id {flag_id} in {self.where}")

    def close(self) -> None:
        with self._lock:
            if self._db is not None and self._pid == os.getpid():
                self._db.close()
            self._db = None


class _SQLite:
    """A SQLite file, through the standard library: one connection, one statement at
    a time (WAL: other processes may write the same file)."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self._conn = sqlite3.connect(path, check_same_thread=False, timeout=30)
        self._conn.execute("PRAGMA journal_mode=WAL")
        self._conn.execute("PRAGMA synchronous=NORMAL")  # WAL: durable across app crashes
        for table in _TABLES:
            self._conn.execute(_schema(table))
        self._conn.commit()
        self._lock = threading.Lock()

    def run(self, sql: str, params: Mapping[str, Any]) -> tuple[list[Any], int]:
        """The rows and the row count of one statement, committed."""
        with self._lock:
            cur = self._conn.execute(sql, params)
            rows = cur.fetchall()
            self._conn.commit()
            return rows, cur.rowcount

    def insert(self, row: Mapping[str, Any], table: str = "flags") -> int:
        """Add a row (a flag); its id."""
        names, marks = ", ".join(row), ", ".join(f":{k}" for k in row)
        with self._lock:
            cur = self._conn.execute(f"INSERT INTO {table} ({names}) VALUES ({marks})", row)
            self._conn.commit()
            return int(cur.lastrowid or 0)

    def close(self) -> None:
        self._conn.close()


class _SQLAlchemy:
    """Any database SQLAlchemy reaches, through its engine's connection pool."""

    def __init__(self, url: str) -> None:
        try:
            import sqlalchemy as sa
        except ImportError as exc:
            raise ImportError(
                "a flag store at a URL needs SQLAlchemy: pip install 'alto-langgraph[flags]'"
            ) from exc
        self._sa = sa
        self._engine = sa.create_engine(url, pool_pre_ping=True)
        kinds = {"REAL": sa.Float, "INTEGER": sa.Integer, "TEXT": sa.Text}
        meta = sa.MetaData()
        self._tables = {  # ``_TABLES``, in SQLAlchemy's terms
            table: sa.Table(
                table,
                meta,
                sa.Column("id", sa.Integer, sa.Identity(), primary_key=True),
                *(sa.Column(c, kinds[kind], nullable=not required) for c, kind, required in cols),
            )
            for table, cols in _TABLES.items()
        }
        meta.create_all(self._engine)

    def run(self, sql: str, params: Mapping[str, Any]) -> tuple[list[Any], int]:
        with self._engine.begin() as conn:
            result = conn.execute(self._sa.text(sql), dict(params))
            rows = list(result.fetchall()) if result.returns_rows else []
            return rows, result.rowcount

    def insert(self, row: Mapping[str, Any], table: str = "flags") -> int:
        """Add a row (a flag); its id (as the dialect reports it: no RETURNING needed)."""
        with self._engine.begin() as conn:
            result = conn.execute(self._tables[table].insert().values(**row))
            return int(result.inserted_primary_key[0])

    def close(self) -> None:
        self._engine.dispose()
