"""The local engine: a transformers model with continuous batching, on CPU or CUDA.

It drives transformers' own ``ContinuousBatchingManager`` (transformers 5): a background
thread that keeps a paged KV cache, admits new requests into the running batch between
decode steps and shares cached prompt blocks between requests. Each request's tokens
come back to the event loop that asked for them (``register_result_handler``); this
module turns them into text ``Delta`` s.

Greedy decoding only (``temperature=0``): it is reproducible, the same text alone or in
a batch (tested). ``docs/research/lm-engines.md`` records what was measured.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import threading
from collections.abc import AsyncIterator
from typing import Any

from ..errors import EngineError
from . import models
from .engine import Delta, SamplingParams, stop_cut
from .tokenized import TokenizedEngine

#: what abort() and close() put in the result queue of a request they end
_ABORTED = object()
_DTYPES = ("float32", "float16", "bfloat16")

#: how long a cancelled request's handler stays (transformers sends no final result for
#: it; tokens it still makes are counted meanwhile)
_CANCELLED_HANDLER_TTL = 5.0


class TransformersEngine(TokenizedEngine):
    """``model``: ``"smollm2-135m"`` (default), ``"random"`` (with ``random_config``) or a
    local model folder (see ``models.py``). ``device``: ``"auto"`` (CUDA when present),
    ``"cpu"`` or ``"cuda"``. ``max_batch``: the most requests decoding at once.
    ``threads``: torch CPU threads (default: torch's)."""

    name = "transformers"

    def __init__(
        self,
        model: str = models.SMOLLM2,
        *,
        random_config: dict[str, Any] | None = None,
        device: str = "auto",
        dtype: str | None = None,
        max_batch: int = 8,
        max_context: int | None = None,
        page_size: int = 32,
        cache_tokens: int = 16384,
        threads: int | None = None,
    ) -> None:
        import torch
        from transformers import GenerationConfig
        from transformers.generation import ContinuousBatchingConfig

        if device == "auto":
            device = "cuda" if torch.cuda.is_available() else "cpu"
        if device not in ("cpu", "cuda") and not device.startswith("cuda:"):
            raise ValueError(
                f"transformers engine: device must be auto, cpu or cuda, not {device!r}"
            )
        for name, value in (
            ("max_batch", max_batch),
            ("page_size", page_size),
            ("cache_tokens", cache_tokens),
        ):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"transformers engine: {name} must be an int >= 1, got {value!r}")
        if dtype is not None and dtype not in _DTYPES:
            raise ValueError(
                f"transformers engine: dtype must be one of {', '.join(_DTYPES)}, got {dtype!r}"
            )
        if threads is not None:
            torch.set_num_threads(threads)
        dtype = dtype or ("float32" if device == "cpu" else "bfloat16")
        self.model_name = model
        self.device = device
        self.max_batch = max_batch
        self.model, self.tokenizer = models.load(
            model, random_config=random_config, device=device, dtype=dtype
        )
        # a request must fit in the KV cache: one that outgrows it fails the whole engine
        num_blocks = max(cache_tokens // page_size, 2 * max_batch)
        positions = getattr(self.model.config, "max_position_embeddings", 2048)
        limit = min(positions, num_blocks * page_size)
        if max_context is not None and max_context > limit:
            raise ValueError(
                f"transformers engine: max_context={max_context} is over what the model and "
                f"the KV cache hold ({limit}; raise cache_tokens)"
            )
        self.max_context = max_context or limit
        self.eos = self.tokenizer.eos_token_id
        gen = GenerationConfig(
            do_sample=False,
            max_new_tokens=64,
            eos_token_id=self.eos,
            pad_token_id=self.tokenizer.pad_token_id,
        )
        # each token's log probability (the confidence monitors read), where the
        # installed transformers reports them
        reported = _has_field(ContinuousBatchingConfig, "return_logprobs")
        extra = {"return_logprobs": True} if reported else {}
        batching = ContinuousBatchingConfig(
            page_size=page_size,
            num_blocks=num_blocks,
            max_batch_tokens=max(1024, 4 * page_size),
            max_requests_per_batch=max_batch,
            **extra,
        )
        self._manager = self.model.init_continuous_batching(
            generation_config=gen, continuous_batching_config=batching
        )
        # transformers starts its generation thread as a non-daemon thread, which would
        # keep the interpreter from exiting (and from running the atexit hook that
        # closes the engine); a thread is a daemon if the thread starting it is one.
        starter = threading.Thread(target=self._manager.start, daemon=True)
        starter.start()
        starter.join()
        # transformers hands each request's results to the loop that registered its
        # handler; a caller's loop may close (or a cancelled request's results keep
        # coming), and a result sent to a closed loop kills the generation thread. So
        # handlers live on a loop of the engine's own, which forwards to the caller's.
        self._dispatch = asyncio.new_event_loop()
        threading.Thread(
            target=self._dispatch.run_forever, name="alto-lm-dispatch", daemon=True
        ).start()
        self._start_counting()
        self._closed = False
        self._serial = itertools.count()
        #: internal id -> the queue its results go to (close() ends them all)
        self._queues: dict[str, tuple[asyncio.AbstractEventLoop, asyncio.Queue[Any]]] = {}

    # -- the interface ---------------------------------------------------------------
    async def generate(
        self, prompt: str, params: SamplingParams, request_id: str
    ) -> AsyncIterator[Delta]:
        if self._closed:
            raise EngineError(f"{self.name}: the engine is closed")
        if params.temperature != 0:
            raise ValueError(
                f"{self.name}: only greedy decoding (temperature=0) is supported, "
                f"got temperature={params.temperature}"
            )
        ids = self._admit(prompt, params, request_id)
        # transformers' own id: unique per call, so a late result or a deferred cancel of
        # an earlier call with the same request id cannot reach this one
        inner = f"{request_id}#{next(self._serial)}"
        loop = asyncio.get_running_loop()
        results: asyncio.Queue[Any] = asyncio.Queue()
        made = [0]  # tokens the engine made for this request, counted even after a cancel

        def on_result(out: Any) -> None:  # on the dispatch loop
            self._counts["generated_tokens"] += len(out.generated_tokens) - made[0]
            made[0] = len(out.generated_tokens)
            with contextlib.suppress(RuntimeError):  # the caller's loop is gone
                loop.call_soon_threadsafe(results.put_nowait, out)

        self._queues[inner] = (loop, results)
        self._on_dispatch(self._manager.register_result_handler, inner, on_result)
        added = self._manager.add_request(
            ids, request_id=inner, max_new_tokens=params.max_tokens, streaming=True
        )
        if added is None:
            self._queues.pop(inner, None)
            self._done(request_id)
            raise EngineError(f"{self.name}: the engine is not accepting requests")
        tokens: list[int] = []
        shown = 0  # how much of the text went out
        unsent: tuple[int, ...] = ()  # token ids not handed out yet
        unsent_lp: tuple[float, ...] = ()
        finished = False  # transformers is done with the request
        try:
            while True:
                out = await results.get()
                if out is _ABORTED:
                    yield Delta("", (), "abort")
                    return
                self._status[request_id] = "running" if out.status.name == "DECODING" else "waiting"
                new = out.generated_tokens[len(tokens) :]
                new_lp = tuple((out.logprobs or [])[len(tokens) : len(tokens) + len(new)])
                tokens.extend(new)
                finished = out.is_finished()
                if finished and out.error is not None:
                    raise EngineError(f"{self.name}: generation failed: {out.error}")
                text = self.tokenizer.decode(tokens, skip_special_tokens=True)
                upto, stopped = stop_cut(text, params.stop)
                reason = None
                if stopped:
                    reason = "stop"
                elif finished:
                    reason = "stop" if tokens and tokens[-1] == self.eos else "length"
                    upto = len(text)
                elif text.endswith("\ufffd"):  # a character cut between tokens: wait
                    unsent, unsent_lp = (*unsent, *new), (*unsent_lp, *new_lp)
                    continue
                piece, shown = text[shown : max(upto, shown)], max(upto, shown)
                ids, unsent = (*unsent, *new), ()
                lps, unsent_lp = (*unsent_lp, *new_lp), ()
                if len(lps) != len(ids):  # none reported
                    lps = ()
                if reason is not None:
                    yield Delta(piece, ids, reason, logprobs=lps)  # type: ignore[arg-type]
                    return
                if piece or ids:
                    yield Delta(piece, ids, logprobs=lps)
        finally:
            self._done(request_id)
            self._queues.pop(inner, None)
            if not finished:  # left early, stopped by a stop string, or failed
                self._manager.cancel_request(inner)
                self._dispatch.call_soon_threadsafe(
                    self._dispatch.call_later, _CANCELLED_HANDLER_TTL, self._forget, inner
                )

    async def abort(self, request_id: str) -> None:
        for inner, (loop, results) in list(self._queues.items()):
            if inner.rpartition("#")[0] == request_id:
                self._end(inner, loop, results)

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        for inner, (loop, results) in list(self._queues.items()):
            self._end(inner, loop, results)
        await asyncio.to_thread(self._manager.stop, block=True, timeout=30)
        self._dispatch.call_soon_threadsafe(self._dispatch.stop)

    # -- helpers ---------------------------------------------------------------------
    def _end(self, inner: str, loop: asyncio.AbstractEventLoop, results: Any) -> None:
        """Abort a request: transformers stops it but sends no final result for it, so
        its generator is told here (it ends with "abort")."""
        self._manager.cancel_request(inner)
        with contextlib.suppress(RuntimeError):  # the caller's loop is gone
            loop.call_soon_threadsafe(results.put_nowait, _ABORTED)

    def _on_dispatch(self, func: Any, *args: Any) -> None:
        """Run ``func(*args)`` on the dispatch loop, and wait for it."""

        async def call() -> None:
            func(*args)

        asyncio.run_coroutine_threadsafe(call(), self._dispatch).result(timeout=10)

    def _forget(self, request_id: str) -> None:
        router = getattr(self._manager, "output_router", None)
        lock = getattr(router, "_lock", None)
        if router is not None and lock is not None:
            with lock:
                router.result_handlers.pop(request_id, None)


def _has_field(config_class: Any, name: str) -> bool:
    fields = getattr(config_class, "__dataclass_fields__", None)
    if fields is not None:
        return name in fields
    import inspect

    return name in inspect.signature(config_class).parameters
