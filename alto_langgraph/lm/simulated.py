"""A simulated LM engine: no model, a cost model of one, for load tests.

It batches continuously as a real engine does (requests join the running batch between
decode steps, each leaves when done) and keeps a prefix cache of prompt blocks, but each
step only *waits* for the time the ``Timing`` model gives:

    step time = step_base + step_per_request * batch + prefill_per_token * new prompt tokens

where "new prompt tokens" are the prompt tokens of requests admitted in that step that
the prefix cache did not hold. Its numbers are labelled simulated (``stats().simulated``).

The text it "generates" comes from a seeded source: a request's output is one of
``texts``, picked from the prompt (and ``seed``), streamed piece by piece (a piece is a
word with its leading space), so a pipeline downstream still gets sentences to work on.
The same prompt gives the same text, like greedy decoding.
"""

from __future__ import annotations

import asyncio
import collections
import dataclasses
import math
import random
import re
import zlib
from collections.abc import AsyncIterator, Iterable, Sequence

from ..errors import EngineError
from .engine import Delta, Engine, EngineStats, SamplingParams, stop_cut

_PIECE = re.compile(r"\s*\S+")

#: the default text source: a few sentences of plain English
DEFAULT_TEXTS = (
    "The Eiffel Tower is in Paris. It was completed in 1889. It is about 330 metres tall.",
    "The Amazon is the largest rainforest on Earth. It spans nine countries. Its river "
    "carries more water than any other.",
    "Water boils at 100 degrees Celsius at sea level. At higher altitudes it boils at a "
    "lower temperature.",
    "The Moon orbits the Earth about once every 27 days. It has no atmosphere to speak of.",
)


@dataclasses.dataclass(frozen=True)
class Timing:
    """The cost model of a simulated engine, in seconds."""

    step_base: float = 0.02
    step_per_request: float = 0.002
    prefill_per_token: float = 0.0002
    #: the most requests in one running batch; more wait
    max_batch: int = 32
    #: prefix-cache granularity (tokens) and capacity (blocks, least recently used go)
    block_size: int = 16
    cache_blocks: int = 4096

    def __post_init__(self) -> None:
        for name in ("step_base", "step_per_request", "prefill_per_token"):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
                raise ValueError(f"Timing.{name} must be a finite number >= 0, got {value!r}")
        for name in ("max_batch", "block_size", "cache_blocks"):
            if not isinstance(getattr(self, name), int) or getattr(self, name) < 1:
                raise ValueError(f"Timing.{name} must be a positive int")

    def step_time(self, batch: int, new_prompt_tokens: int) -> float:
        return (
            self.step_base
            + self.step_per_request * batch
            + self.prefill_per_token * new_prompt_tokens
        )


def pieces(text: str) -> list[str]:
    """The simulated tokens of a text: words with their leading whitespace."""
    return _PIECE.findall(text)


def token_id(piece: str) -> int:
    return zlib.crc32(piece.encode()) % 49152


@dataclasses.dataclass(eq=False)
class _Request:
    id: str
    prompt_ids: list[int]
    params: SamplingParams
    output: list[str]  # the pieces it will generate
    deltas: asyncio.Queue[Delta]
    produced: int = 0
    text: str = ""  # generated so far
    shown: int = 0  # how much of it went out (a possible stop string's start waits)
    cached: int = 0  # prompt tokens the prefix cache held, once admitted
    sent: bool = False  # a delta went out (the first carries ``cached``)
    done: bool = False

    def emit(self, upto: int, ids: tuple[int, ...], reason: str | None = None) -> None:
        """Hand out the text up to ``upto`` that has not gone out yet."""
        cached = 0 if self.sent else self.cached
        self.sent = True
        text, self.shown = self.text[self.shown : max(upto, self.shown)], max(upto, self.shown)
        self.deltas.put_nowait(Delta(text, ids, reason, cached))  # type: ignore[arg-type]


class SimulatedEngine(Engine):
    """An engine that runs no model (see the module doc)."""

    simulated = True

    def __init__(
        self,
        timing: Timing | None = None,
        *,
        texts: Iterable[str] = DEFAULT_TEXTS,
        seed: int = 0,
        max_context: int = 2048,
        name: str = "simulated",
    ) -> None:
        if timing is not None and not isinstance(timing, Timing):
            raise TypeError(f"SimulatedEngine(timing=...) must be a Timing, got {timing!r}")
        if not isinstance(max_context, int) or max_context < 1:
            raise ValueError(f"SimulatedEngine(max_context=...) must be >= 1, got {max_context!r}")
        self.timing = timing or Timing()
        self.texts: Sequence[str] = tuple(texts)
        if not self.texts or not all(isinstance(t, str) and t.strip() for t in self.texts):
            raise ValueError("SimulatedEngine(texts=...) needs at least one non-empty string")
        self.seed = seed
        self.max_context = max_context
        self.name = name
        self._waiting: collections.deque[_Request] = collections.deque()
        self._running: list[_Request] = []
        self._by_id: dict[str, _Request] = {}
        self._cache: collections.OrderedDict[int, None] = collections.OrderedDict()
        self._wake: asyncio.Event | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._scheduler: asyncio.Task[None] | None = None
        self._counts = collections.Counter[str]()
        self._busy = 0.0

    # -- the interface ---------------------------------------------------------------
    async def generate(
        self, prompt: str, params: SamplingParams, request_id: str
    ) -> AsyncIterator[Delta]:
        req = self._admit(prompt, params, request_id)
        try:
            while True:
                delta = await req.deltas.get()
                if isinstance(delta, BaseException):
                    raise EngineError(f"{self.name}: the scheduler failed: {delta!r}") from delta
                yield delta
                if delta.finished:
                    return
        finally:
            if not req.done:  # the caller left early: its slot goes to others
                self._finish(req, "abort")

    async def abort(self, request_id: str) -> None:
        req = self._by_id.get(request_id)
        if req is not None and not req.done:
            self._finish(req, "abort")

    def stats(self) -> EngineStats:
        c = self._counts
        return EngineStats(
            engine=self.name,
            simulated=True,
            waiting=len(self._waiting),
            running=len(self._running),
            max_running=c["max_running"],
            requests=c["requests"],
            prompt_tokens=c["prompt_tokens"],
            cached_tokens=c["cached_tokens"],
            generated_tokens=c["generated_tokens"],
            tokens_per_s=c["generated_tokens"] / self._busy if self._busy else 0.0,
        )

    async def close(self) -> None:
        for req in [*self._waiting, *self._running]:
            self._finish(req, "abort")
        if self._scheduler is not None:
            self._scheduler.cancel()
            await asyncio.gather(self._scheduler, return_exceptions=True)
            self._scheduler = None

    # -- requests --------------------------------------------------------------------
    def _admit(self, prompt: str, params: SamplingParams, request_id: str) -> _Request:
        if not isinstance(prompt, str) or not prompt.strip():
            raise ValueError(f"{self.name}: the prompt is empty")
        if not isinstance(params, SamplingParams):
            raise TypeError(f"{self.name}: params must be SamplingParams, got {params!r}")
        if request_id in self._by_id:
            raise ValueError(f"{self.name}: request id {request_id!r} is already running")
        prompt_ids = [token_id(p) for p in pieces(prompt)]
        if len(prompt_ids) + params.max_tokens > self.max_context:
            raise ValueError(
                f"{self.name}: the prompt ({len(prompt_ids)} tokens) plus max_tokens "
                f"({params.max_tokens}) exceeds the context length ({self.max_context})"
            )
        loop = asyncio.get_running_loop()
        if self._loop is None or self._scheduler is None or self._scheduler.done():
            self._loop, self._wake = loop, asyncio.Event()
            self._scheduler = loop.create_task(self._schedule(), name=f"alto:{self.name}")
        elif self._loop is not loop:
            raise RuntimeError(f"{self.name}: an engine serves one event loop")
        req = _Request(
            request_id, prompt_ids, params, self._output(prompt, params), asyncio.Queue()
        )
        self._by_id[request_id] = req
        self._waiting.append(req)
        self._wake.set()  # type: ignore[union-attr]
        return req

    def _output(self, prompt: str, params: SamplingParams) -> list[str]:
        """The pieces this request will generate: greedy (temperature 0) is a function
        of the prompt and the engine's seed; sampling also of ``params.seed``."""
        key = zlib.crc32(f"{self.seed}\0{prompt}".encode())
        if params.temperature > 0:
            key = random.Random(params.seed).randrange(1 << 32) ^ key
        return pieces(self.texts[key % len(self.texts)])

    def _finish(
        self, req: _Request, reason: str, upto: int = -1, ids: tuple[int, ...] = ()
    ) -> None:
        """End ``req``; the text up to ``upto`` goes out with the last delta (-1: all)."""
        req.done = True
        self._by_id.pop(req.id, None)
        if req in self._running:
            self._running.remove(req)
        elif req in self._waiting:
            self._waiting.remove(req)
        self._counts["requests"] += 1
        req.emit(len(req.text) if upto < 0 else upto, ids, reason)

    # -- the batch -------------------------------------------------------------------
    def _cached_prefix(self, prompt_ids: list[int]) -> int:
        """Prompt tokens the prefix cache holds (whole blocks from the start); the
        prompt's blocks become the most recently used."""
        size = self.timing.block_size
        held, chain, hit = 0, 0, True
        for start in range(0, len(prompt_ids) - size + 1, size):
            chain = hash((chain, *prompt_ids[start : start + size]))
            if hit and chain in self._cache:
                held += size
                self._cache.move_to_end(chain)
            else:
                hit = False
                self._cache[chain] = None
        while len(self._cache) > self.timing.cache_blocks:
            self._cache.popitem(last=False)
        return held

    async def _schedule(self) -> None:
        try:
            await self._run_batches()
        except asyncio.CancelledError:
            raise
        except BaseException as exc:  # no request may wait for a scheduler that is gone
            for req in [*self._waiting, *self._running]:
                req.done = True
                self._by_id.pop(req.id, None)
                req.deltas.put_nowait(exc)  # type: ignore[arg-type]
            self._waiting.clear()
            self._running.clear()  # (the next request starts a new scheduler)

    async def _run_batches(self) -> None:
        wake = self._wake
        assert wake is not None
        while True:
            if not self._waiting and not self._running:
                wake.clear()
                await wake.wait()
            new_tokens = 0
            while self._waiting and len(self._running) < self.timing.max_batch:
                req = self._waiting.popleft()
                req.cached = self._cached_prefix(req.prompt_ids)
                new_tokens += len(req.prompt_ids) - req.cached
                self._counts["prompt_tokens"] += len(req.prompt_ids)
                self._counts["cached_tokens"] += req.cached
                self._running.append(req)
            batch = len(self._running)
            self._counts["max_running"] = max(self._counts["max_running"], batch)
            step = self.timing.step_time(batch, new_tokens)
            await asyncio.sleep(step)
            self._busy += step
            for req in list(self._running):
                if not req.done:
                    self._step(req)

    def _step(self, req: _Request) -> None:
        """One decode step of one request: its next piece, or its end."""
        if req.produced >= len(req.output):  # the text is over: end of sequence
            self._finish(req, "stop")
            return
        piece = req.output[req.produced]
        req.produced += 1
        self._counts["generated_tokens"] += 1
        req.text += piece
        ids = (token_id(piece),)
        upto, stopped = stop_cut(req.text, req.params.stop)
        if stopped:
            self._finish(req, "stop", upto, ids)
        elif req.produced >= req.params.max_tokens:
            self._finish(req, "length", -1, ids)
        else:
            req.emit(upto, ids)
