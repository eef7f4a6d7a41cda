"""Language models as stages: engines behind one streaming interface.

``engine.py`` is the interface; ``simulated.py`` an engine that runs no model, for load
tests (its numbers are labelled simulated).
"""

from .engine import Delta, Engine, EngineError, EngineStats, SamplingParams
from .simulated import SimulatedEngine, Timing

__all__ = [
    "Delta",
    "Engine",
    "EngineError",
    "EngineStats",
    "SamplingParams",
    "SimulatedEngine",
    "Timing",
]
