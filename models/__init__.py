"""Networks of the learned path: feature extractor, heads, rig decoder, solver control, weights."""

from core import __version__

__all__ = ["__version__"]
