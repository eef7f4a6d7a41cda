"""Options of the alto backend, given as keyword arguments to ``compile``."""

from __future__ import annotations

import dataclasses
from typing import Any

EXECUTORS = ("inline",)


@dataclasses.dataclass(frozen=True)
class AltoOptions:
    """What ``compile(backend="alto", **options)`` accepts.

    executor: where stage instances run. ``"inline"``: in the calling process and event
        loop (async nodes on the loop, sync nodes on its threads).
    """

    executor: str = "inline"

    def __post_init__(self) -> None:
        if self.executor not in EXECUTORS:
            raise ValueError(
                f"alto option executor={self.executor!r} is not one of {', '.join(EXECUTORS)}"
            )

    @classmethod
    def from_kwargs(cls, kwargs: dict[str, Any]) -> AltoOptions:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(kwargs) - known)
        if unknown:
            raise TypeError(
                f"unknown alto option(s): {', '.join(unknown)}; "
                f"known options are: {', '.join(sorted(known))}"
            )
        return cls(**kwargs)
