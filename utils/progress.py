"""Progress bars on long stages (tqdm), one switch for the whole process.

Bars show on a terminal and stay silent where output is not one (``disable=None``); the demo's
``--quiet`` turns them off everywhere with `set_progress` (False).
"""
from __future__ import annotations

from typing import Iterable, Iterator, Optional, TypeVar

from tqdm import tqdm

__all__ = ["set_progress", "progress_enabled", "progress_bar"]

T = TypeVar("T")
_ENABLED = True


def set_progress(enabled: bool) -> None:
    """Show (True, on a terminal) or hide (False) every progress bar from now on."""
    global _ENABLED
    _ENABLED = bool(enabled)


def progress_enabled() -> bool:
    """Whether progress bars may show (`set_progress`)."""
    return _ENABLED


def progress_bar(items: Iterable[T], *, total: Optional[int] = None, desc: str = "", unit: str = "it",
                 enabled: bool = True) -> Iterator[T]:
    """``items`` with a tqdm bar (on a terminal, where `set_progress` and ``enabled`` allow)."""
    disable = None if (_ENABLED and enabled) else True  # None: only on a terminal
    return iter(tqdm(items, total=total, desc=desc, unit=unit, disable=disable, leave=False))
