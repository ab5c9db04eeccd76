"""`load_face_model`: the one entry point from the files users have to a `MorphableModel`."""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Optional, Union

import torch

from core.face_model.bfm import load_bfm2009, load_face3d
from core.face_model.ict import load_ict
from core.face_model.model import KINDS, FaceModelError, MorphableModel, model_from_arrays

logger = logging.getLogger(__name__)


def load_face_model(kind: str, path: Union[str, Path], *, dtype: torch.dtype = torch.float32,
                    device: Union[str, torch.device] = "cpu", region: Optional[str] = None,
                    cache_dir: Union[str, Path, None] = None, **options) -> MorphableModel:
    """Load a face model from the files users have.

    Args:
        kind: ``"ict"`` (ICT-FaceKit directory: ``FaceXModel/*.obj`` + ``vertex_indices.json``),
            ``"bfm2009"`` (folder with ``01_MorphableModel.mat``, ``Exp_Pca.bin``, ``std_exp.txt``,
            ``BFM_exp_idx.mat``, ``BFM_front_idx.mat``), or ``"face3d"`` (face3d's ``BFM.mat`` with
            ``Exp_Pca.bin`` and ``std_exp.txt`` beside it; ``path`` is the folder or BFM.mat).
        path: the directory (or file) holding the model.
        dtype: float32 by default; float64 on request.
        region: optional region name to return a smaller model (e.g. ``"face"`` for ICT).
        cache_dir: where the ICT loader keeps its converted file (default: beside the files, or
            ``~/.cache/inorig`` when that folder is read-only).
        options: per-kind options (``n_identity``, ``n_expression``, ``n_albedo`` for BFM kinds).
    """
    if kind not in KINDS:
        raise FaceModelError(f"unknown face model kind {kind!r}; expected one of {KINDS}")
    loader = {"ict": load_ict, "bfm2009": load_bfm2009, "face3d": load_face3d}[kind]
    if kind == "ict":
        options["cache_dir"] = cache_dir
    arrays = loader(Path(path), **options)
    model = model_from_arrays(arrays, dtype=dtype).to(device=device)
    logger.info("loaded %s face model from %s (%d vertices)", kind, path, model.n_vertices)
    return model.region(region) if region else model
