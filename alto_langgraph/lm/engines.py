"""Engines by name, and the spec of one: checked in ``compile``, built in an LM stage.

``EngineSpec("transformers", {"model": "smollm2-135m", "max_batch": 8})`` names an
engine class and its keyword options. ``check()`` finds the class and binds the options
to its signature without loading anything, so a misspelt option or an unknown model
fails at compile time with a message naming it; ``build()`` makes the engine (in the
LM stage's process, or in this one for stock LangGraph).
"""

from __future__ import annotations

import dataclasses
import importlib
import importlib.util
import inspect
from typing import Any

from .engine import Engine

#: engine name -> "module:class" (imported only when used: heavy dependencies)
ENGINES = {
    "transformers": "alto_langgraph.lm.transformers_engine:TransformersEngine",
    "simulated": "alto_langgraph.lm.simulated:SimulatedEngine",
    "openai": "alto_langgraph.lm.openai_engine:OpenAIEngine",
    "vllm": "alto_langgraph.lm.vllm_engine:VLLMEngine",
    "sglang": "alto_langgraph.lm.sglang_engine:SGLangEngine",
}


#: the packages an engine imports when it is built, and the extra that installs them
_NEEDS = {
    "transformers": (("torch", "transformers"), "lm"),
    "openai": (("httpx",), "openai"),
    "vllm": (("vllm", "transformers"), "vllm"),
    "sglang": (("sglang", "transformers"), "sglang"),
}


@dataclasses.dataclass(frozen=True)
class EngineSpec:
    engine: str
    options: dict[str, Any] = dataclasses.field(default_factory=dict)

    def engine_class(self) -> type[Engine]:
        try:
            module, _, cls = ENGINES[self.engine].partition(":")
        except KeyError:
            raise ValueError(
                f"unknown LM engine {self.engine!r}: expected one of {', '.join(ENGINES)}"
            ) from None
        try:
            return getattr(importlib.import_module(module), cls)
        except ImportError as exc:
            raise ImportError(f"LM engine {self.engine!r}: {exc}") from exc

    def check(self) -> None:
        """Raise a clear error for an unknown engine, option or model, or a missing
        package (loads nothing)."""
        cls = self.engine_class()
        packages, extra = _NEEDS.get(self.engine, ((), ""))
        missing = [p for p in packages if importlib.util.find_spec(p) is None]
        if missing:
            raise ImportError(
                f"LM engine {self.engine!r} needs {', '.join(missing)}, which is not "
                f"installed: pip install 'alto-langgraph[{extra}]'"
            )
        try:
            inspect.signature(cls).bind(**self.options)
        except TypeError as exc:
            known = [p for p in inspect.signature(cls).parameters if p != "self"]
            raise TypeError(
                f"LM engine {self.engine!r}: {exc}; its options are: {', '.join(known)}"
            ) from None
        if self.engine == "simulated":
            self.build()  # cheap (nothing runs until a request): checks every value
        if self.engine == "transformers":
            from . import models

            models.check(self.options.get("model", models.SMOLLM2))

    def build(self) -> Engine:
        return self.engine_class()(**self.options)
