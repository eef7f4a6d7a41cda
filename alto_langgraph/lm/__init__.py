"""Language models as stages: engines behind one streaming interface.

* ``chat.py``: ``ChatAlto``, the LangChain chat model app code calls;
* ``engine.py``: the engine interface; ``transformers_engine.py`` (a local model with
  continuous batching, CPU or CUDA; needs ``alto-langgraph[lm]``), ``simulated.py`` (no
  model, a cost model: for load tests, its numbers labelled simulated);
* ``engines.py``: engines by name; ``models.py``: where the local engine's weights come
  from, offline;
* ``serving.py``: an LM call, and the LM stage that serves it; ``client.py``: where a
  call goes (an LM stage through the router, or an engine in this process).
"""

from ..errors import EngineError
from .chat import ChatAlto
from .engine import Delta, Engine, EngineStats, SamplingParams
from .engines import ENGINES, EngineSpec
from .simulated import SimulatedEngine, Timing

__all__ = [
    "ENGINES",
    "ChatAlto",
    "EngineSpec",
    "Delta",
    "Engine",
    "EngineError",
    "EngineStats",
    "SamplingParams",
    "SimulatedEngine",
    "Timing",
]
