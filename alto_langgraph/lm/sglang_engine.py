"""The ``sglang`` engine: SGLang's offline ``Engine`` in the LM stage's process.

Written against SGLang 0.5 (``docs/research/lm-engines.md``):
``await engine.async_generate(input_ids=..., stream=True, rid=...)`` gives an async
iterator of chunks whose text is cumulative by default, so the deltas are computed here;
there is no public abort, so ``tokenizer_manager.abort_request(rid=...)`` is used. Not
run in this project's CI (it needs a GPU); install with ``alto-langgraph[sglang]``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

from .engine import Delta, SamplingParams
from .tokenized import TokenizedEngine


class SGLangEngine(TokenizedEngine):
    """``model``: a local model folder; ``server_args``: SGLang ``ServerArgs`` fields."""

    name = "sglang"

    def __init__(self, model: str, *, max_context: int | None = None, **server_args: Any) -> None:
        import sglang
        from transformers import AutoTokenizer

        if max_context is not None:
            server_args["context_length"] = max_context
        self._engine = sglang.Engine(model_path=model, **server_args)
        self.tokenizer = AutoTokenizer.from_pretrained(model)
        self.max_context = max_context or self._sane_context(self.tokenizer)
        self._start_counting()

    async def generate(
        self, prompt: str, params: SamplingParams, request_id: str
    ) -> AsyncIterator[Delta]:
        ids = self._admit(prompt, params, request_id)
        sampling: dict[str, Any] = {
            "max_new_tokens": params.max_tokens,
            "temperature": params.temperature,
        }
        if params.stop:
            sampling["stop"] = list(params.stop)
        if params.seed is not None:
            sampling["sampling_seed"] = params.seed
        text, done = "", False
        ids_so_far: list[int] = []
        try:
            chunks = await self._engine.async_generate(
                input_ids=ids, sampling_params=sampling, stream=True, rid=request_id
            )
            first = True
            async for chunk in chunks:
                meta = chunk.get("meta_info", {})
                self._status[request_id] = "running"
                whole = chunk.get("text", "")
                piece = whole[len(text) :] if whole.startswith(text) else whole
                text = whole if whole.startswith(text) else text + whole
                # output_ids are cumulative or per chunk, depending on the server's
                # settings: a list that extends the ids so far is cumulative
                out_ids = list(chunk.get("output_ids") or [])
                if out_ids[: len(ids_so_far)] == ids_so_far and len(out_ids) >= len(ids_so_far):
                    new_ids = tuple(out_ids[len(ids_so_far) :])
                else:
                    new_ids = tuple(out_ids)
                ids_so_far.extend(new_ids)
                cached = int(meta.get("cached_tokens") or 0) if first else 0
                first = False
                self._counts["cached_tokens"] += cached
                self._counts["generated_tokens"] += len(new_ids)
                finish = meta.get("finish_reason")
                reason = None
                if finish:
                    kind = finish.get("type") if isinstance(finish, dict) else finish
                    reason = kind if kind in ("stop", "length", "abort") else "stop"
                yield Delta(piece, new_ids, reason, cached)
                if reason is not None:
                    done = True
                    return
        finally:
            self._done(request_id)
            if not done:
                await self.abort(request_id)

    async def abort(self, request_id: str) -> None:
        self._engine.tokenizer_manager.abort_request(rid=request_id)

    async def close(self) -> None:
        self._engine.shutdown()
