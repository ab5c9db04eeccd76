"""The one error type of the exporters."""
from __future__ import annotations


class ExportError(ValueError):
    """Inputs that cannot be exported together (the message names the file or argument and the problem)."""
