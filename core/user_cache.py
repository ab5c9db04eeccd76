"""Where this project keeps what it derives from installed files (a saved face detector, results that
are the same in every run): one folder per user, with no import beyond the standard library, so
that code running before torch is imported can ask too."""
from __future__ import annotations

import os
from pathlib import Path

__all__ = ["user_cache_dir"]


def user_cache_dir() -> Path:
    """``$XDG_CACHE_HOME/inorig``, else ``~/.cache/inorig``."""
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "inorig"
