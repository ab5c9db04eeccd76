"""The last few results of a computation, found again by the values of its inputs.

Several steps redo the same work on the same model-level inputs within a run: the normal operators
of a mesh's triangles, an atlas' texel map and fill indices, a template's side of deformation
transfer. Their inputs are often new tensors holding the same values (a rig's head triangles are
made anew each time they are asked for), so a cache keyed by identity would miss: `RecentResults`
compares values (`core.checks.same_tensor` for tensors, ``np.array_equal`` with shape and dtype
for arrays, ``==`` otherwise) and keeps its own copies of the keys.

Example:
    >>> recent = RecentResults(2)
    >>> key = (torch.tensor([1, 2, 3]), 4)
    >>> recent.get(key) is None
    True
    >>> recent.put(key, "built")
    'built'
    >>> recent.get((torch.tensor([1, 2, 3]), 4))
    'built'

Some of them depend only on the face model and its fixed head layout, so every run computes them
anew for the same answer (about a quarter of a second of the whole head and its texture):
`StoredResults` keeps those on disk as well (`results_dir`), under a digest of the key's values,
of this package's source files and of the libraries' versions, so that changed code or libraries
never read an old answer.
"""
from __future__ import annotations

import functools
import hashlib
import importlib.metadata
import logging
import os
import pickle
import platform
import re
from pathlib import Path
from typing import Any, Callable, Generic, List, Optional, Tuple, TypeVar

import numpy as np
import torch

from core.checks import same_tensor
from core.user_cache import user_cache_dir

__all__ = ["RecentResults", "StoredResults", "results_dir", "RESULTS_DIR_ENV"]

logger = logging.getLogger(__name__)

#: Environment variable naming the folder of `StoredResults` (empty: keep nothing on disk).
RESULTS_DIR_ENV = "INORIG_RESULTS_DIR"
#: Bytes the stored results may take in all; beyond them the least recently used go (a face model
#: and torch version take ~75 MB for ICT, so a few versions of the code fit).
_KEPT_BYTES = 400 * 2 ** 20
_STORED_NAME = re.compile(r"[\w.-]+-[0-9a-f]{40}\.pkl")  # `StoredResults._path`'s names

V = TypeVar("V")


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, torch.Tensor) or isinstance(b, torch.Tensor):
        return isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor) and same_tensor(a, b)
    if isinstance(a, np.ndarray) or isinstance(b, np.ndarray):
        return (isinstance(a, np.ndarray) and isinstance(b, np.ndarray) and a.shape == b.shape
                and a.dtype == b.dtype and np.array_equal(a, b))
    return a == b


def _kept(x: Any) -> Any:
    """A copy of a key part that later changes to the caller's tensor or array cannot reach."""
    if isinstance(x, torch.Tensor):
        return x.detach().clone()
    if isinstance(x, np.ndarray):
        return x.copy()
    return x


class RecentResults(Generic[V]):
    """The results of the last ``size`` distinct keys (tuples of tensors, arrays and plain values),
    newest first."""

    def __init__(self, size: int) -> None:
        self.size = int(size)
        self._entries: List[Tuple[tuple, V]] = []

    def get(self, key: tuple) -> Optional[V]:
        """The result kept for a key with these values, or None."""
        for kept, value in self._entries:
            if len(kept) == len(key) and all(_same(a, b) for a, b in zip(kept, key)):
                return value
        return None

    def put(self, key: tuple, value: V) -> V:
        """Keep ``value`` for ``key`` (the oldest dropped beyond ``size``); returns ``value``."""
        self._entries.insert(0, (tuple(_kept(x) for x in key), value))
        del self._entries[self.size:]
        return value

    def clear(self) -> None:
        self._entries.clear()

    def __len__(self) -> int:
        return len(self._entries)


def results_dir() -> Optional[Path]:
    """The folder of `StoredResults`: ``$INORIG_RESULTS_DIR`` where set (empty: None, nothing is
    kept on disk), else ``results`` in `user_cache_dir`."""
    chosen = os.environ.get(RESULTS_DIR_ENV)
    if chosen is not None:
        return Path(chosen) if chosen.strip() else None
    return user_cache_dir() / "results"


@functools.lru_cache(maxsize=1)
def _code_version() -> bytes:
    """A digest of this package's source files (``core``, where every stored computation lives) and of
    the Python, torch, NumPy, SciPy and pykdtree versions: stored results are found again only by the
    same code and libraries."""
    digest = hashlib.blake2b(digest_size=20)
    versions = (platform.python_version(), torch.__version__, np.__version__, _version("scipy"),
                _version("pykdtree"))
    digest.update(" ".join(versions).encode())
    root = Path(__file__).resolve().parent
    for path in sorted(p for p in root.rglob("*") if p.suffix in (".py", ".pyx")):
        digest.update(str(path.relative_to(root)).encode())
        digest.update(path.read_bytes())
    return digest.digest()


def _version(package: str) -> str:
    """An installed package's version from its metadata (importing SciPy only for it costs 0.01 s),
    or "absent"."""
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return "absent"


def _feed(digest: Any, part: Any) -> bool:
    """Add one key part's type, shape and values to ``digest``; False where it cannot be digested."""
    if isinstance(part, torch.Tensor):
        if part.layout != torch.strided or part.dtype in (torch.bfloat16, torch.float16) or part.is_complex():
            return False
        part = part.detach().cpu().contiguous().numpy()
    if isinstance(part, np.ndarray):
        if part.dtype.hasobject:
            return False
        part = np.ascontiguousarray(part)
        digest.update(f"array {part.dtype.str} {part.shape}".encode())
        digest.update(part.reshape(-1).view(np.uint8).data)
        return True
    if isinstance(part, (bool, int, float, str, type(None))):
        digest.update(f"{type(part).__name__} {part!r}".encode())
        return True
    if isinstance(part, tuple):
        digest.update(f"tuple {len(part)}".encode())
        return all(_feed(digest, p) for p in part)
    return False


class StoredResults(RecentResults[V]):
    """`RecentResults` that also keeps its results on disk between runs, for computations whose inputs
    are the same in every run (a face model's template, its fixed head layout).

    `recall` looks in memory, then in `results_dir` (a pickle per result, named by ``name`` and a
    digest of the key's values and `_code_version`), and only then computes; a result it computes
    is written there (atomically; the least recently used go beyond `_KEPT_BYTES` in all). A missing,
    unreadable or unwritable folder or file only costs the computation (logged at debug level).
    """

    def __init__(self, size: int, name: str) -> None:
        super().__init__(size)
        self.name = str(name)

    def _path(self, key: tuple) -> Optional[Path]:
        folder = results_dir()
        if folder is None:
            return None
        digest = hashlib.blake2b(digest_size=20)
        digest.update(_code_version())
        digest.update(self.name.encode())
        if not _feed(digest, key):
            return None
        return folder / f"{self.name}-{digest.hexdigest()}.pkl"

    def recall(self, key: tuple, compute: Callable[[], V]) -> V:
        """The result for ``key``: kept in memory, else stored on disk, else ``compute()`` (kept
        both ways)."""
        value = self.get(key)
        if value is not None:
            return value
        path = self._path(key)
        if path is not None:
            try:
                with open(path, "rb") as f:
                    value = pickle.load(f)
            except FileNotFoundError:
                value = None
            except Exception as err:  # noqa: BLE001 - a truncated or foreign file: computed again
                logger.debug("ignoring the stored result %s (%s)", path, err)
                value = None
            if value is not None:
                try:
                    os.utime(path)  # recently used (a read-only folder keeps the old time)
                except OSError:
                    pass
        if value is None:
            value = compute()
            if path is not None:
                self._store(path, value)
        return self.put(key, value)

    def _store(self, path: Path, value: V) -> None:
        partial = path.with_name(f"{path.name}.{os.getpid()}.partial")
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            with open(partial, "wb") as f:
                pickle.dump(value, f, protocol=pickle.HIGHEST_PROTOCOL)
            os.replace(partial, path)
            _evict(path.parent, keep=path)
        except (OSError, pickle.PicklingError) as err:
            logger.debug("result not stored at %s (%s): computed again next time", path, err)
            try:
                partial.unlink(missing_ok=True)
            except OSError:
                pass


def _evict(folder: Path, keep: Path) -> None:
    """Delete the least recently used stored results (never ``keep``) until they take at most
    `_KEPT_BYTES`."""
    stored = []
    for path in folder.glob("*.pkl"):
        if not _STORED_NAME.fullmatch(path.name):  # not ours: a folder named by the user may hold others
            continue
        try:
            info = path.stat()
        except OSError:  # deleted meanwhile by another process
            continue
        stored.append((info.st_mtime, info.st_size, path))
    total = sum(size for _, size, _ in stored)
    for _, size, path in sorted(stored, key=lambda item: item[0]):
        if total <= _KEPT_BYTES:
            break
        if path != keep:
            path.unlink(missing_ok=True)
            total -= size
