"""The compiler: lowers a compiled ``StateGraph`` into a printable dataflow ``Plan``."""

from .lower import lower
from .plan import Aggregator, Plan, Queue, Splitter, Stage

__all__ = ["Aggregator", "Plan", "Queue", "Splitter", "Stage", "lower"]
