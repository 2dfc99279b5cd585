"""A company's own tool module, referenced by import path from a test departments file."""
from smolagents import tool

from agents.tools import current_caller


@tool
def whoami() -> str:
    """Returns the platform user id of the person who asked (bound on the host, never from the model)."""
    return current_caller().user
