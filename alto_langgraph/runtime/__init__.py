"""The runtime: per-request coordination, messages and executors."""

from .executor import Executor, InlineExecutor, make_executor
from .messages import Header, Message

__all__ = ["Executor", "Header", "InlineExecutor", "Message", "make_executor"]
