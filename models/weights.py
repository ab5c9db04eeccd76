"""Saving and loading the network's weights (``net_weights/<name>.pth``).

A weights file is a plain ``torch.save`` dictionary readable with ``weights_only=True``:
``format``, ``config`` (`NetworkConfig` as a dict), ``face_model`` (name and sizes of the model
region it was trained on, checked at load), ``state_dict`` (float16 to keep the file small; loaded
back as float32) and ``training`` (command, seed, steps, final losses: where it came from).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, Optional, Union

import torch

from core.face_model.model import MorphableModel
from models.inorig import INORig, NetworkConfig

__all__ = ["WEIGHTS_FORMAT", "NetworkWeightsError", "save_network", "load_network", "face_model_signature"]

WEIGHTS_FORMAT = "inorig-network-1"


class NetworkWeightsError(ValueError):
    """A weights file is missing, unreadable, or made for another face model (message names the file)."""


def face_model_signature(face: MorphableModel) -> Dict[str, Any]:
    """What a weights file must match: model name and sizes."""
    return {"name": face.name, "n_vertices": int(face.n_vertices), "n_identity": int(face.n_identity),
            "n_expression": int(face.n_expression)}


def save_network(net: INORig, path: Union[str, Path], training: Optional[Dict[str, Any]] = None,
                 half: bool = True) -> Path:
    """Write the network's weights and config; returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {k: (v.detach().cpu().half() if half and v.is_floating_point() else v.detach().cpu())
             for k, v in net.state_dict().items()}
    torch.save({"format": WEIGHTS_FORMAT, "config": net.config.to_dict(),
                "face_model": face_model_signature(net.face), "state_dict": state,
                "training": training or {}}, path)
    return path


def load_network(path: Union[str, Path], face: MorphableModel, device: Union[str, torch.device] = "cpu"
                 ) -> INORig:
    """Build the network for ``face`` from a weights file, in eval mode on ``device``.

    Raises:
        NetworkWeightsError: missing or unreadable file, another format, or weights made for
            another face model (name or sizes differ).
    """
    path = Path(path)
    if not path.is_file():
        raise NetworkWeightsError(f"{path}: network weights file not found (train one with train.py, "
                                  f"or use the shipped net_weights/*.pth)")
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises several types for corrupt / foreign files
        raise NetworkWeightsError(f"{path}: not a readable weights file ({type(exc).__name__}: {exc})") from exc
    if not isinstance(data, dict) or data.get("format") != WEIGHTS_FORMAT:
        found = data.get("format") if isinstance(data, dict) else type(data).__name__
        raise NetworkWeightsError(f"{path}: expected format {WEIGHTS_FORMAT!r}, found {found!r}")
    want, got = face_model_signature(face), data.get("face_model", {})
    if want != got:
        raise NetworkWeightsError(f"{path}: weights were trained for face model {got}, "
                                  f"but the loaded model is {want}")
    try:
        config = NetworkConfig.from_dict(data["config"])
        net = INORig(face, config)
        state = {k: (v.float() if v.is_floating_point() else v) for k, v in data["state_dict"].items()}
        net.load_state_dict(state)
    except (KeyError, ValueError, RuntimeError) as exc:
        raise NetworkWeightsError(f"{path}: weights do not fit the network ({exc})") from exc
    net.training_info = data.get("training", {})
    return net.place(device).eval()
