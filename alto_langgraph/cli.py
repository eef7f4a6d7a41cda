"""``alto-langgraph`` (also ``python -m alto_langgraph``): command-line tools.

    alto-langgraph serve-lm [--engine transformers] [--model smollm2-135m] [--port 8000]

``serve-lm`` serves one of alto's engines as an OpenAI-compatible HTTP server
(``lm/server.py``), which the ``openai`` engine, or any OpenAI client, can use.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from typing import Any

from .lm.engines import ENGINES, EngineSpec
from .lm.server import OpenAIServer


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
    args = ap.parse_args(argv)
    options = dict(_option(o) for o in args.option)
    if args.engine == "transformers":
        options.setdefault("model", args.model)
    spec = EngineSpec(args.engine, options)
    try:
        spec.check()
    except (TypeError, ValueError, ImportError) as exc:
        ap.error(str(exc))
    asyncio.run(_serve(spec, args.model, args.host, args.port))
    return 0


def _option(text: str) -> tuple[str, Any]:
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise SystemExit(f"alto-langgraph: --option needs KEY=VALUE, got {text!r}")
    try:
        return key, json.loads(value)
    except ValueError:
        return key, value  # a bare string


async def _serve(spec: EngineSpec, model: str, host: str, port: int) -> None:
    engine = spec.build()
    server = OpenAIServer(engine, model)
    port = await server.start(host, port)
    # the line a supervisor (or a test) waits for
    print(f"serving {model!r} ({spec.engine} engine) on http://{host}:{port}/v1", flush=True)
    try:
        await server.serve_forever()
    finally:
        await engine.close()


if __name__ == "__main__":
    sys.exit(main())
