"""Progress bars on long stages (tqdm), one switch for the whole process.

Bars show on a terminal and stay silent where output is not one (``disable=None``); the demo's
``--quiet`` turns them off everywhere with `set_progress` (False).
"""
from __future__ import annotations

from typing import Iterable, Iterator, Optional, TypeVar

from tqdm import tqdm

__all__ = ["set_progress", "progress_enabled", "progress_bar", "progress_counter"]

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


def progress_counter(*, total: Optional[int] = None, initial: int = 0, desc: str = "",
                     unit: str = "it") -> tqdm:
    """A tqdm bar moved by hand (``bar.update(n)``; close it), for work counted elsewhere, e.g. in a
    child process (on a terminal, where `set_progress` allows)."""
    return tqdm(total=total, initial=initial, desc=desc, unit=unit, disable=None if _ENABLED else True,
                leave=False)
