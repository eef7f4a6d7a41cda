"""The examples run, and give the same final state on LangGraph and on alto (their exit
code says so): ``make demo``'s fact-check pipeline, and the one on a real model."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).parent.parent / "examples"


@pytest.mark.parametrize(
    ("script", "args"),
    [("fact_check.py", ["-n", "2", "-c", "2"]), ("lm_fact_check.py", ["-n", "1", "-c", "1"])],
)
def test_an_example_gives_the_same_answers_on_both_backends(script: str, args: list[str]) -> None:
    proc = subprocess.run(
        [sys.executable, str(EXAMPLES / script), *args],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    n = args[1]
    assert f"same final state on both backends: {n}/{n}" in proc.stdout
