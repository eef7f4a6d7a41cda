"""Which GPUs each stage instance gets: distinct ones for GPU stages, none for others."""

from __future__ import annotations

import os
import shutil
import warnings
from collections.abc import Mapping

from .spec import StageSpec


def visible_gpus() -> list[str]:
    """The GPUs this process may hand out: ``CUDA_VISIBLE_DEVICES`` if set, else what
    ``nvidia-smi`` lists (none on a machine without NVIDIA GPUs)."""
    env = os.environ.get("CUDA_VISIBLE_DEVICES")
    if env is not None:
        return [d for d in env.split(",") if d.strip() and d.strip() != "-1"]
    if shutil.which("nvidia-smi") is None:
        return []
    import subprocess

    try:
        out = subprocess.run(
            ["nvidia-smi", "--query-gpu=index", "--format=csv,noheader"],
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return []
    return [line.strip() for line in out.splitlines() if line.strip()]


def assign_gpus(specs: Mapping[str, StageSpec], gpus: list[str]) -> dict[tuple[str, int], str]:
    """``CUDA_VISIBLE_DEVICES`` for every instance: distinct GPUs for GPU stages, none
    for the others (so CPU stages never grab a GPU)."""
    need = sum(s.gpus * s.replicas for s in specs.values())
    if need and not gpus:
        warnings.warn(
            "alto: stages ask for GPUs but none are visible; they run on the CPU",
            RuntimeWarning,
            stacklevel=4,
        )
    elif need > len(gpus):
        asks = ", ".join(
            f"{s.name!r} {s.replicas} x {s.gpus}" for s in specs.values() if s.gpus and s.replicas
        )
        raise ValueError(
            f"alto: the stages ask for {need} GPUs in all ({asks}: instances x GPUs each), "
            f"but only {len(gpus)} are visible ({','.join(gpus)}); lower replicas or gpus "
            "per stage"
        )
    free = iter(gpus)
    out = {}
    for spec in specs.values():
        for i in range(spec.replicas):
            out[(spec.name, i)] = (
                ",".join(next(free) for _ in range(spec.gpus)) if gpus and spec.gpus else ""
            )
    return out
