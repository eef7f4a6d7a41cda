"""OpenAI's completion and chat completion requests, checked: every field this server
reads, with its type and range, and every field it cannot honour refused rather than
ignored (a client's mistake is a ``BadRequest`` naming it)."""

from __future__ import annotations

import dataclasses
import json
import math
from typing import Any

from .engine import SamplingParams
from .http import BadRequest

#: max_tokens of a chat request that names none
DEFAULT_CHAT = 256


@dataclasses.dataclass(frozen=True)
class Request:
    """A generation request, checked."""

    chat: bool
    prompt: str | list[dict[str, str]]  # the messages of a chat
    params: SamplingParams
    stream: bool
    include_usage: bool


# -- the request's body ------------------------------------------------------------------
#: fields accepted only with a value that asks for nothing (None always does): any other
#: asks for what this server cannot do, and is refused rather than ignored
_INERT: dict[str, tuple[Any, ...]] = {
    "tools": ([],),
    "functions": ([],),
    "tool_choice": ("none", "auto"),
    "function_call": ("none", "auto"),
    "parallel_tool_calls": (True, False),
    "logprobs": (False,),
    "top_logprobs": (0,),
    "logit_bias": ({},),
    "presence_penalty": (0, 0.0),
    "frequency_penalty": (0, 0.0),
    "response_format": ({"type": "text"},),
    "echo": (False,),
    "suffix": ("",),
    "best_of": (1,),
}


_PLURAL = {"tools", "functions", "parallel_tool_calls", "logprobs", "top_logprobs"}


#: fields read (or, for user, metadata and store, meaningless here: OpenAI's own
#: bookkeeping) on both endpoints
_FIELDS = {
    "model",
    "max_tokens",
    "temperature",
    "top_p",
    "n",
    "stop",
    "stream",
    "stream_options",
    "seed",
    "user",
    "metadata",
    "store",
    *_INERT,
}


_ROLES = ("system", "user", "assistant")


def json_object(body: bytes) -> dict[str, Any]:
    if not body:
        raise BadRequest("the body is empty: send a JSON object")
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        raise BadRequest("the body is not UTF-8") from None
    try:
        obj = json.loads(text, parse_constant=_not_json)
    except RecursionError:
        raise BadRequest("the body is nested too deeply") from None
    except ValueError as exc:
        raise BadRequest(f"the body is not JSON: {exc}") from None
    if not isinstance(obj, dict):
        raise BadRequest(f"the body must be a JSON object, got {type(obj).__name__}")
    return obj


def _not_json(name: str) -> Any:
    # Python's json reads NaN and Infinity, which JSON has not: a NaN temperature passes
    # every range check, so it is refused here, by name
    raise ValueError(f"{name} is not a JSON value")


def checked(req: dict[str, Any], chat: bool, served: str) -> Request:
    route = "/v1/chat/completions" if chat else "/v1/completions"
    known = _FIELDS | ({"messages", "max_completion_tokens"} if chat else {"prompt"})
    unknown = sorted(set(req) - known)
    if unknown:
        names = ", ".join(map(repr, unknown))
        raise BadRequest(f"unknown field {names} for {route}: this server does not take it")
    for name, inert in _INERT.items():
        value = req.get(name)
        # by type too: 0 == False, and logprobs=0 still asks for logprobs
        if value is not None and not any(type(value) is type(v) and value == v for v in inert):
            verb = "are" if name in _PLURAL else "is"
            raise BadRequest(f"{name} {verb} not supported by this server, got {_short(value)}")
    model = _typed(req, "model", str, "a string")
    if model is not None and model != served:
        raise BadRequest(f"model {model!r} is not served here; this serves {served!r}")
    _typed(req, "user", str, "a string")
    _typed(req, "metadata", dict, "an object")
    _typed(req, "store", bool, "true or false")
    _check_n(req.get("n"))
    _check_top_p(req.get("top_p"))
    stream = bool(_typed(req, "stream", bool, "true or false"))
    return Request(
        chat=chat,
        prompt=_messages(req.get("messages")) if chat else _prompt(req.get("prompt")),
        params=SamplingParams(
            max_tokens=_max_tokens(req, chat),
            temperature=_temperature(req.get("temperature")),
            stop=_stops(req.get("stop")),
            seed=_seed(req.get("seed")),
        ),
        stream=stream,
        include_usage=_include_usage(req.get("stream_options"), stream),
    )


def _typed(req: dict[str, Any], name: str, kind: type, what: str) -> Any:
    value = req.get(name)
    if value is not None and not isinstance(value, kind):
        raise BadRequest(f"{name} must be {what}, got {_short(value)}")
    return value


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)  # JSON true is no count


def _number(name: str, value: Any, low: float, high: float) -> float:
    if not isinstance(value, int | float) or isinstance(value, bool):
        raise BadRequest(f"{name} must be a finite number, got {_short(value)}")
    try:
        number = float(value)
    except OverflowError:  # an int too large for a float
        number = math.inf
    if not math.isfinite(number):
        raise BadRequest(f"{name} must be a finite number, got {_short(value)}")
    if not low <= number <= high:
        raise BadRequest(f"{name} must be between {low:g} and {high:g}, got {_short(value)}")
    return number


def _max_tokens(req: dict[str, Any], chat: bool) -> int:
    # chat clients send max_completion_tokens now; OpenAI's defaults otherwise
    for name in ("max_completion_tokens", "max_tokens"):
        value = req.get(name)
        if value is not None:
            if not _is_int(value) or value < 1:
                raise BadRequest(f"{name} must be a positive int, got {_short(value)}")
            return value
    return DEFAULT_CHAT if chat else 16


def _temperature(value: Any) -> float:
    # greedy by default, unlike OpenAI's 1: the transformers engine decodes greedily only
    return 0.0 if value is None else _number("temperature", value, 0, 2)


def _check_top_p(value: Any) -> None:
    if value is not None and _number("top_p", value, 0, 1) != 1:
        raise BadRequest(f"top_p must be 1: this server does not do nucleus sampling, got {value}")


def _check_n(value: Any) -> None:
    if value is None:
        return
    if not _is_int(value):
        raise BadRequest(f"n must be an int, got {_short(value)}")
    if value != 1:
        raise BadRequest("n must be 1: this server makes one choice per request")


def _seed(value: Any) -> int | None:
    if value is None:
        return None
    if not _is_int(value) or not -(1 << 63) <= value < 1 << 63:
        raise BadRequest(f"seed must be an integer of 64 bits, got {_short(value)}")
    return value


def _stops(stop: Any) -> tuple[str, ...]:
    if stop is None:
        return ()
    stops = [stop] if isinstance(stop, str) else stop
    if not isinstance(stops, list) or not all(isinstance(s, str) and s for s in stops):
        raise BadRequest(f"stop must be a non-empty string or a list of them, got {_short(stop)}")
    return tuple(stops)


def _include_usage(options: Any, stream: bool) -> bool:
    if options is None:
        return False
    if not stream:
        raise BadRequest("stream_options is only allowed with stream: true")
    if not isinstance(options, dict) or set(options) - {"include_usage"}:
        raise BadRequest(f"stream_options takes only include_usage, got {_short(options)}")
    usage = options.get("include_usage", False)
    if not isinstance(usage, bool):
        raise BadRequest(f"stream_options.include_usage must be true or false, got {usage!r}")
    return usage


def _prompt(prompt: Any) -> str:
    if not isinstance(prompt, str):
        raise BadRequest(f"prompt must be a string (one prompt per request), got {_short(prompt)}")
    return prompt


def _messages(messages: Any) -> list[dict[str, str]]:
    if not isinstance(messages, list) or not messages:
        raise BadRequest(f"messages must be a non-empty list, got {_short(messages)}")
    return [_message(f"messages[{i}]", m) for i, m in enumerate(messages)]


def _message(where: str, message: Any) -> dict[str, str]:
    if not isinstance(message, dict):
        raise BadRequest(f"{where} must be an object with a role and a content")
    # name only labels a participant, which chat templates do not show; anything else
    # (tool_calls, tool_call_id, audio) needs what this server does not have
    extra = sorted(set(message) - {"role", "content", "name"})
    if extra:
        names = ", ".join(map(repr, extra))
        raise BadRequest(f"{where} has unsupported field {names}: it takes role, content, name")
    role = message.get("role")
    if role not in _ROLES:
        roles = ", ".join(map(repr, _ROLES))
        raise BadRequest(f"{where}.role must be one of {roles}, got {_short(role)}")
    if not isinstance(message.get("name", ""), str):
        raise BadRequest(f"{where}.name must be a string")
    return {"role": role, "content": _content(where, message.get("content"))}


def _content(where: str, content: Any) -> str:
    """A chat message's text: a string, or a list of text parts."""
    if isinstance(content, str):
        return content
    if isinstance(content, list) and all(
        isinstance(p, dict) and p.get("type") == "text" and isinstance(p.get("text"), str)
        for p in content
    ):
        return "".join(p["text"] for p in content)
    raise BadRequest(
        f"{where}.content must be text: a string or a list of text parts, got {_short(content)}"
    )


def _short(value: Any) -> str:
    """The value as the client wrote it, for an error message (cut short)."""
    try:
        text = json.dumps(value)
    except (TypeError, ValueError, RecursionError):
        text = f"a {type(value).__name__}"
    return text if len(text) <= 80 else text[:77] + "..."


def usage(completion_tokens: int) -> dict[str, Any]:
    return {"usage": {"completion_tokens": completion_tokens}}
