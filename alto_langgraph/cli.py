"""``alto-langgraph`` (also ``python -m alto_langgraph``): command-line tools.

    alto-langgraph serve-lm [--engine transformers] [--model smollm2-135m] [--port 8000]
        [--host 127.0.0.1] [--api-key KEY] [--insecure-no-auth]
        [--read-timeout 10] [--max-connections 256]

    alto-langgraph flagged [--store PATH] [--node N] [--assertion A] [--severity S] ...
        [--jsonl | --label ID JSON | --import-labels FILE]

``flagged`` lists what model assertions flagged (``flagstore.py``), exports it as JSON
lines for labelling, and writes labels back. ``serve-lm`` serves one of alto's engines
as an OpenAI-compatible HTTP server (``lm/server.py``), which the ``openai`` engine,
or any OpenAI client, can use. It refuses a non-loopback ``--host`` without an API key
(``--api-key`` or ``$ALTO_SERVE_LM_API_KEY``) unless ``--insecure-no-auth`` is given.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
from typing import Any

from .lm.engines import ENGINES, EngineSpec
from .lm.server import API_KEY_ENV, OpenAIServer, ServerConfig


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="alto-langgraph")
    sub = ap.add_subparsers(dest="command", required=True)
    serve = sub.add_parser("serve-lm", help="serve an engine over an OpenAI-compatible API")
    serve.add_argument("--engine", default="transformers", choices=sorted(ENGINES))
    serve.add_argument("--model", default="smollm2-135m", help="the model name it serves")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8000, help="0: any free port")
    serve.add_argument(
        "--option",
        action="append",
        default=[],
        metavar="KEY=JSON",
        help="an engine option, e.g. --option max_batch=8 --option device='\"cpu\"'",
    )
    _add_protection(serve)
    flagged = _add_flagged(sub)
    args = ap.parse_args(argv)
    if args.command == "flagged":
        try:
            return _flagged(args, flagged)
        except _store_errors() as exc:
            # a store that is no database, unreachable, or locked: said, not a traceback
            text = exc.args[0] if isinstance(exc, KeyError) and exc.args else exc
            flagged.error(f"{type(exc).__name__}: {text}")
    try:  # before the engine loads: a bad option should not cost a model load
        config = ServerConfig(
            api_key=args.api_key,
            insecure_no_auth=args.insecure_no_auth,
            read_timeout=args.read_timeout,
            max_connections=args.max_connections,
        )
        config.check_host(args.host)
    except ValueError as exc:
        ap.error(str(exc))
    options = dict(_option(o) for o in args.option)
    if args.engine == "transformers":
        options.setdefault("model", args.model)
    spec = EngineSpec(args.engine, options)
    try:
        spec.check()
    except (TypeError, ValueError, ImportError) as exc:
        ap.error(str(exc))
    asyncio.run(_serve(spec, args.model, args.host, args.port, config))
    return 0


def _add_protection(serve: argparse.ArgumentParser) -> None:
    serve.add_argument(
        "--api-key",
        metavar="KEY",
        # the environment's key, when no flag is given: a flag shows in `ps`
        default=os.environ.get(API_KEY_ENV) or None,
        help="require 'Authorization: Bearer KEY' on every request "
        f"(default: ${API_KEY_ENV}; none: no key needed)",
    )
    serve.add_argument(
        "--insecure-no-auth",
        action="store_true",
        help="allow a --host other than loopback without an API key (anyone who can "
        "reach the port can then use the engine)",
    )
    serve.add_argument(
        "--read-timeout",
        type=float,
        default=10.0,
        metavar="SECONDS",
        help="a request must arrive whole within it, else 408 and the connection "
        "closes; a client that reads nothing of an answer for it is dropped (default 10)",
    )
    serve.add_argument(
        "--max-connections",
        type=int,
        default=256,
        metavar="N",
        help="connections beyond it get an immediate 503 (default 256; lowered to fit "
        "the open-file limit)",
    )


def _store_errors() -> tuple[type[BaseException], ...]:
    import sqlite3

    errors: tuple[type[BaseException], ...] = (
        OSError,
        ValueError,
        KeyError,
        RuntimeError,
        ImportError,
        sqlite3.Error,
    )
    try:
        from sqlalchemy.exc import SQLAlchemyError
    except ImportError:
        return errors
    return (*errors, SQLAlchemyError)


def _add_flagged(sub: Any) -> argparse.ArgumentParser:
    flagged = sub.add_parser(
        "flagged",
        help="list, export and label what model assertions flagged",
        description="The flag store's records (default: a table, oldest first). "
        "Labelling: --jsonl > todo.jsonl, fill in each line's label, --import-labels todo.jsonl.",
    )
    flagged.add_argument(
        "--store",
        metavar="PATH|URL",
        help="the SQLite file (default: $ALTO_FLAGS, "
        "or alto_langgraph/flags.sqlite under $XDG_DATA_HOME)",
    )
    for name in ("app", "node", "assertion", "thread_id", "request_id"):
        flagged.add_argument(f"--{name.replace('_', '-')}", dest=name, metavar="NAME")
    flagged.add_argument("--severity", choices=("record", "retry", "fail"))
    flagged.add_argument("--since", metavar="TIME", help="ISO date/time, or Unix seconds")
    flagged.add_argument(
        "--sample",
        type=int,
        metavar="N",
        help="only N unlabelled records to label next, chosen by --strategy",
    )
    flagged.add_argument(
        "--strategy",
        choices=("bandit", "uniform"),
        default="bandit",
        help="bandit (default): a bandit over assertions, which favours those whose "
        "labelled flags were real errors (a label that differs from the output); "
        "uniform: at random",
    )
    flagged.add_argument("--seed", type=int, default=0, help="for --sample (default 0)")
    action = flagged.add_mutually_exclusive_group()
    action.add_argument("--jsonl", action="store_true", help="the records as JSON lines")
    action.add_argument(
        "--label", nargs=2, metavar=("ID", "JSON"), help="write a label on one record"
    )
    action.add_argument(
        "--import-labels",
        metavar="FILE",
        help="write back the labels of a JSONL export (lines whose label is not null)",
    )
    return flagged


def _flagged(args: argparse.Namespace, ap: argparse.ArgumentParser) -> int:
    from .flagstore import FILTERS, FlagStore  # no model code needed for this

    store = FlagStore(args.store)
    if args.label is not None:
        flag_id, text = args.label
        if not flag_id.isdigit():
            ap.error(f"--label: ID must be a flag's id (a number), got {flag_id!r}")
        store.set_label(int(flag_id), _json_or_text(text))
        return 0
    if args.import_labels is not None:
        return _import_labels(store, args.import_labels, ap)
    filters = {k: getattr(args, k) for k in FILTERS}
    rows = store.flags(since=_since(args.since, ap), **filters)
    if args.sample is not None:
        if args.sample < 1:
            ap.error(f"--sample: N must be >= 1, got {args.sample}")
        from .sampling import choose_flags

        rows = choose_flags(rows, args.sample, strategy=args.strategy, seed=args.seed)
    if args.jsonl:
        for row in rows:
            print(json.dumps(row, ensure_ascii=False))
        return 0
    if not rows:
        print(
            f"no flags in {store.where}"
            + (" matching the filters" if any(filters.values()) else "")
        )
        return 0
    import datetime

    print(f"{'id':>5}  {'time (UTC)':19}  {'node':16} {'assertion':20} {'severity':8}  message")
    for r in rows:
        when = datetime.datetime.fromtimestamp(r["time"], datetime.UTC).strftime(
            "%Y-%m-%d %H:%M:%S"
        )
        print(
            f"{r['id']:>5}  {when}  {r['node'][:16]:16} {r['assertion'][:20]:20} "
            f"{r['severity']:8}  {(r['message'] or '')[:80]}"
        )
    print(f"{len(rows)} flag(s) in {store.where}")
    return 0


def _import_labels(store: Any, path: str, ap: argparse.ArgumentParser) -> int:
    """All or nothing: every line is read and every id checked before a label is written."""
    labels: list[tuple[int, Any]] = []
    try:
        with open(path, encoding="utf-8") as f:
            for n, line in enumerate(f, 1):
                if not line.strip():
                    continue
                try:
                    row = json.loads(line)
                    if row.get("label") is not None:
                        labels.append((int(row["id"]), row["label"]))
                except (ValueError, KeyError, TypeError, AttributeError) as exc:
                    ap.error(f"--import-labels: {path}, line {n}: {type(exc).__name__}: {exc}")
    except OSError as exc:
        ap.error(f"--import-labels: {exc}")
    known = {row["id"] for row in store.flags()}
    unknown = sorted({i for i, _ in labels} - known)
    if unknown:
        ap.error(f"--import-labels: no flags with ids {unknown} in {store.where}; nothing written")
    for flag_id, label in labels:
        store.set_label(flag_id, label)
    print(f"wrote {len(labels)} label(s) to {store.where}")
    return 0


def _since(text: str | None, ap: argparse.ArgumentParser) -> float | None:
    if text is None:
        return None
    import datetime

    try:
        return float(text)
    except ValueError:
        pass
    try:
        when = datetime.datetime.fromisoformat(text)
    except ValueError:
        ap.error(f"--since: {text!r} is neither an ISO date/time nor Unix seconds")
    if when.tzinfo is None:
        when = when.replace(tzinfo=datetime.UTC)
    return when.timestamp()


def _json_or_text(text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError:
        return text


def _option(text: str) -> tuple[str, Any]:
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise SystemExit(f"alto-langgraph: --option needs KEY=VALUE, got {text!r}")
    try:
        return key, json.loads(value)
    except ValueError:
        return key, value  # a bare string


async def _serve(spec: EngineSpec, model: str, host: str, port: int, config: ServerConfig) -> None:
    engine = spec.build()
    server = OpenAIServer(engine, model, config)
    port = await server.start(host, port)
    # the line a supervisor (or a test) waits for
    print(f"serving {model!r} ({spec.engine} engine) on http://{host}:{port}/v1", flush=True)
    try:
        await server.serve_forever()
    finally:
        await engine.close()


if __name__ == "__main__":
    sys.exit(main())
