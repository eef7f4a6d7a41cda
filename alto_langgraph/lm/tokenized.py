"""What the engines that run a Hugging Face model share (transformers, vLLM, SGLang): the
tokenizer's chat template, the checks a prompt passes before it takes a batch slot, and
the counters behind ``stats()``."""

from __future__ import annotations

import collections
import time
from typing import Any

from .engine import Engine, EngineStats, SamplingParams


class TokenizedEngine(Engine):
    tokenizer: Any
    #: the largest running batch the engine allows (0: not known here)
    max_batch: int = 0

    @staticmethod
    def _sane_context(tokenizer: Any) -> int:
        """The tokenizer's context length, or 0 (unknown: the engine refuses long
        prompts itself) for the huge sentinel tokenizers carry when they do not know."""
        n = getattr(tokenizer, "model_max_length", 0) or 0
        return n if 0 < n < 1 << 24 else 0

    def _start_counting(self) -> None:
        self._status: dict[str, str] = {}  # request id -> "waiting" or "running"
        self._counts = collections.Counter[str]()
        self._started = time.perf_counter()

    def chat_prompt(self, messages: list[dict[str, str]]) -> str:
        return self.tokenizer.apply_chat_template(
            messages, tokenize=False, add_generation_prompt=True
        )

    def count_tokens(self, prompt: str) -> int:
        return len(self._encode(prompt))

    def _encode(self, prompt: str) -> list[int]:
        return self.tokenizer(prompt, add_special_tokens=False)["input_ids"]

    def _admit(self, prompt: str, params: SamplingParams, request_id: str) -> list[int]:
        """The prompt's token ids, once it passes the checks; the request is counted."""
        if not isinstance(prompt, str) or not prompt.strip():
            raise ValueError(f"{self.name}: the prompt is empty")
        if request_id in self._status:
            raise ValueError(f"{self.name}: request id {request_id!r} is already running")
        ids = self._encode(prompt)
        if self.max_context and len(ids) + params.max_tokens > self.max_context:
            raise ValueError(
                f"{self.name}: the prompt ({len(ids)} tokens) plus max_tokens "
                f"({params.max_tokens}) exceeds the context length ({self.max_context})"
            )
        self._status[request_id] = "waiting"
        self._counts["prompt_tokens"] += len(ids)
        return ids

    def _done(self, request_id: str) -> None:
        if self._status.pop(request_id, None) is not None:
            self._counts["requests"] += 1

    def stats(self) -> EngineStats:
        c = self._counts
        running = sum(s == "running" for s in self._status.values())
        return EngineStats(
            engine=self.name,
            simulated=False,
            waiting=len(self._status) - running,
            running=running,
            max_running=self.max_batch,
            requests=c["requests"],
            prompt_tokens=c["prompt_tokens"],
            cached_tokens=c["cached_tokens"],
            generated_tokens=c["generated_tokens"],
            tokens_per_s=c["generated_tokens"] / max(time.perf_counter() - self._started, 1e-9),
        )
