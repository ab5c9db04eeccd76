"""Where this project keeps what it derives from installed files (a saved face detector, dlib's shape
predictor as arrays, results that are the same in every run): one folder per user, with no import
beyond the standard library, so that code running before torch is imported can ask too; and `kept`,
a value made once and read back from there."""
from __future__ import annotations

import logging
import os
import shutil
from pathlib import Path
from typing import Callable, Tuple, Type, TypeVar

__all__ = ["user_cache_dir", "kept"]

logger = logging.getLogger(__name__)

T = TypeVar("T")


def user_cache_dir() -> Path:
    """``$XDG_CACHE_HOME/inorig``, else ``~/.cache/inorig``."""
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "inorig"


def kept(path: Path, load: Callable[[Path], T], make: Callable[[], T], save: Callable[[T, Path], None],
         what: str, errors: Tuple[Type[BaseException], ...] = (OSError, ValueError)) -> T:
    """``load(path)`` where an earlier call saved the value there, else ``make()``, saved for the
    next call by ``save(value, partial)`` and renamed into ``path``: a reader never sees a copy half
    written, whether it is a file or a folder.

    A copy that ``load`` cannot read (one of ``errors``) is logged and replaced; where nothing can be
    written (``save`` raises one of ``errors``, the folder is read-only, another process renamed its
    copy in first), the value is made again next time. ``what`` names it in the log.
    """
    if path.exists():
        try:
            return load(path)
        except errors as exc:
            logger.warning("ignoring the unreadable %s copy %s (%s); saving it again", what, path, exc)
    value = make()
    partial = path.with_name(f"{path.name}.{os.getpid()}.partial")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        save(value, partial)
        if path.is_dir():  # the unreadable copy: a folder is not replaced by a rename
            shutil.rmtree(path, ignore_errors=True)
        os.replace(partial, path)
    except (OSError, *errors) as exc:
        logger.debug("%s not saved to %s (%s): made again next time", what, path, exc)
    finally:
        if partial.is_dir():
            shutil.rmtree(partial, ignore_errors=True)
        elif partial.exists():
            partial.unlink(missing_ok=True)
    return value
