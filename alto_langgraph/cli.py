"""``alto-langgraph`` (also ``python -m alto_langgraph``): command-line tools.

    alto-langgraph serve-lm [--engine transformers] [--model smollm2-135m] [--port 8000]
        [--host 127.0.0.1] [--api-key KEY] [--insecure-no-auth]
        [--read-timeout 10] [--max-connections 256]

``serve-lm`` serves one of alto's engines as an OpenAI-compatible HTTP server
(``lm/server.py``), which the ``openai`` engine, or any OpenAI client, can use. It
refuses a non-loopback ``--host`` without an API key (``--api-key`` or
``$ALTO_SERVE_LM_API_KEY``) unless ``--insecure-no-auth`` is given.
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
    args = ap.parse_args(argv)
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
