"""I/O, landmarks, crops, visualization, synthetic data and the application pipelines."""

from core import __version__

__all__ = ["__version__"]
