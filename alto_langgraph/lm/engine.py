"""The one interface every LM engine implements.

An engine generates text for many requests at once. ``generate`` is an async generator
of ``Delta`` s (the new text and token ids since the previous one); leaving it early
(``aclose``, or cancelling the task that iterates it) aborts the request and frees its
place in the batch, as ``abort(request_id)`` does. ``stats()`` tells how loaded the
engine is, for routing and for benchmarks.

The shape follows vLLM's ``AsyncLLM.generate(prompt, sampling_params, request_id)`` with
``RequestOutputKind.DELTA``; ``docs/research/lm-engines.md`` records the engines it is
written against.
"""

from __future__ import annotations

import abc
import dataclasses
from collections.abc import AsyncIterator
from typing import Literal

FinishReason = Literal["stop", "length", "abort"]


@dataclasses.dataclass(frozen=True)
class SamplingParams:
    """How to generate. ``temperature=0`` is greedy decoding, which is reproducible."""

    max_tokens: int = 64
    temperature: float = 0.0
    #: generation ends (finish_reason "stop") once the text ends with one of these
    stop: tuple[str, ...] = ()
    seed: int | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.max_tokens, int) or self.max_tokens < 1:
            raise ValueError(
                f"SamplingParams.max_tokens must be a positive int, got {self.max_tokens!r}"
            )
        if not all(isinstance(s, str) and s for s in self.stop):
            raise ValueError(f"SamplingParams.stop must hold non-empty strings, got {self.stop!r}")
        if self.temperature < 0:
            raise ValueError(f"SamplingParams.temperature must be >= 0, got {self.temperature!r}")


@dataclasses.dataclass(frozen=True)
class Delta:
    """What one request generated since its previous delta."""

    text: str
    token_ids: tuple[int, ...]
    #: set on the last delta of a request
    finish_reason: FinishReason | None = None
    #: on the first delta: how many prompt tokens the prefix cache served
    cached_tokens: int = 0
    #: the log probability of each of ``token_ids`` (empty: the engine gives none)
    logprobs: tuple[float, ...] = ()

    @property
    def finished(self) -> bool:
        return self.finish_reason is not None


@dataclasses.dataclass(frozen=True)
class EngineStats:
    """A snapshot of an engine's load and work so far."""

    engine: str
    #: True for an engine that runs no model (its times are modelled, not measured)
    simulated: bool
    waiting: int  # requests not yet in the running batch
    running: int  # requests in the running batch
    max_running: int  # the largest running batch so far
    requests: int  # requests finished (or aborted)
    prompt_tokens: int
    cached_tokens: int  # prompt tokens served from the prefix cache
    generated_tokens: int
    tokens_per_s: float  # generated tokens per second of busy time


def stop_cut(text: str, stops: tuple[str, ...]) -> tuple[int, bool]:
    """How much of a generation's ``text`` may go out now: up to its first stop string
    (True: the generation ends there), else all but a tail that may be the start of a
    stop string still being generated (it goes out once it cannot be)."""
    found = [i for s in stops if (i := text.find(s)) >= 0]
    if found:
        return min(found), True
    hold = 0
    for s in stops:
        for k in range(min(len(s) - 1, len(text)), hold, -1):
            if text.endswith(s[:k]):
                hold = k
                break
    return len(text) - hold, False


def chat_text(messages: list[dict[str, str]]) -> str:
    """A chat in ChatML. Also the text a request's routing key is computed from, on the
    caller's side, before any engine's template: the same chat prefix, the same key
    prefix."""
    return "".join(f"<|im_start|>{m['role']}\n{m['content']}<|im_end|>\n" for m in messages)


class Engine(abc.ABC):
    """An LM engine. Subclasses implement ``generate``, ``abort`` and ``stats``."""

    name: str = "engine"
    simulated: bool = False
    #: the longest prompt + generation the engine accepts, in tokens
    max_context: int = 2048

    def chat_prompt(self, messages: list[dict[str, str]]) -> str:
        """The prompt for a chat (``{"role", "content"}`` dicts), ending where the
        assistant's answer begins. Engines with a tokenizer use its chat template; this
        default is ChatML."""
        return chat_text(messages) + "<|im_start|>assistant\n"

    def chat(
        self, messages: list[dict[str, str]], params: SamplingParams, request_id: str
    ) -> AsyncIterator[Delta]:
        """``generate`` for a chat: its prompt is ``chat_prompt(messages)`` unless the
        engine takes chats itself (an OpenAI-compatible server applies its template)."""
        return self.generate(self.chat_prompt(messages), params, request_id)

    @abc.abstractmethod
    def generate(
        self, prompt: str, params: SamplingParams, request_id: str
    ) -> AsyncIterator[Delta]:
        """Stream the request's deltas; the last one has a ``finish_reason``."""

    @abc.abstractmethod
    async def abort(self, request_id: str) -> None:
        """Stop a request (nothing happens if it is unknown or done)."""

    @abc.abstractmethod
    def stats(self) -> EngineStats: ...

    @abc.abstractmethod
    async def close(self) -> None:
        """Release the engine's resources; requests still running end with "abort"."""
