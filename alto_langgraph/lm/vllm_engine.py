"""The ``vllm`` engine: vLLM's ``AsyncLLM`` in the LM stage's process (one GPU each).

Written against vLLM 0.33 (``docs/research/lm-engines.md``): prompts go in as token ids
(raw strings are deprecated there), outputs come back with ``RequestOutputKind.DELTA``,
``abort(request_id)`` stops a request, and leaving the stream aborts it too. Not run in
this project's CI (it needs a GPU); install with ``alto-langgraph[vllm]``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

from .engine import Delta, SamplingParams
from .tokenized import TokenizedEngine


class VLLMEngine(TokenizedEngine):
    """``model``: a local model folder (or a name vLLM can resolve offline);
    ``engine_args``: ``AsyncEngineArgs`` fields (``gpu_memory_utilization``, ...)."""

    name = "vllm"

    def __init__(self, model: str, *, max_context: int | None = None, **engine_args: Any) -> None:
        from transformers import AutoTokenizer
        from vllm import AsyncEngineArgs
        from vllm.v1.engine.async_llm import AsyncLLM

        args = AsyncEngineArgs(model=model, max_model_len=max_context, **engine_args)
        self._llm = AsyncLLM.from_engine_args(args)
        self.tokenizer = AutoTokenizer.from_pretrained(model)
        config = getattr(self._llm, "model_config", None)
        self.max_context = (
            max_context or getattr(config, "max_model_len", 0) or self._sane_context(self.tokenizer)
        )
        self._start_counting()

    async def generate(
        self, prompt: str, params: SamplingParams, request_id: str
    ) -> AsyncIterator[Delta]:
        from vllm import SamplingParams as VLLMParams
        from vllm.sampling_params import RequestOutputKind

        ids = self._admit(prompt, params, request_id)
        sampling = VLLMParams(
            max_tokens=params.max_tokens,
            temperature=params.temperature,
            stop=list(params.stop) or None,
            seed=params.seed,
            output_kind=RequestOutputKind.DELTA,
        )
        first = True
        outputs = self._llm.generate({"prompt_token_ids": ids}, sampling, request_id)
        try:
            async for out in outputs:
                piece = out.outputs[0]
                self._status[request_id] = "running"
                cached = (out.num_cached_tokens or 0) if first else 0
                first = False
                self._counts["cached_tokens"] += cached
                self._counts["generated_tokens"] += len(piece.token_ids)
                reason = (piece.finish_reason or "stop") if out.finished else None
                if reason not in (None, "stop", "length", "abort"):
                    reason = "stop"
                yield Delta(piece.text, tuple(piece.token_ids), reason, cached)
                if out.finished:
                    return
        finally:  # closing vLLM's generator early aborts the request there
            await outputs.aclose()
            self._done(request_id)

    async def abort(self, request_id: str) -> None:
        await self._llm.abort(request_id)

    async def close(self) -> None:
        self._llm.shutdown()
