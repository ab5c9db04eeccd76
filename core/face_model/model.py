"""Linear 3D morphable face model: neutral + identity + expression (+ albedo), batched in torch.

Everything here is in millimetres, object space as in docs/conventions.md (+y up, +z towards the
viewer). The loaders for the model files users have (ICT-FaceKit, BFM 2009, face3d's BFM.mat) live in
`core/face_model_files.py`; `load_face_model` below is the one public entry point.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field, fields, replace
from typing import Dict, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch

from core.mesh import subset_index, triangles_within

logger = logging.getLogger(__name__)

__all__ = ["KINDS", "FaceModelError", "MorphableModel", "VertexSubset", "linear_shape", "model_from_arrays"]

KINDS = ("ict", "bfm2009", "face3d")


class FaceModelError(ValueError):
    """A face model file is missing or malformed; the message names the file and the problem."""


def _as_tensor(x: Optional[np.ndarray], dtype: torch.dtype) -> Optional[torch.Tensor]:
    if x is None:
        return None
    t = torch.as_tensor(np.asarray(x))
    return t.to(dtype) if t.is_floating_point() else t.long()


def linear_shape(neutral: torch.Tensor, *terms: Tuple[Optional[torch.Tensor], torch.Tensor]) -> torch.Tensor:
    """``neutral + sum_k coeffs_k @ basis_k``: the one evaluation of every linear shape here (face
    models, their vertex subsets, rigs). Terms whose coefficients are None are skipped.

    Shape:
        neutral (V, 3); each term (coeffs (B, n_k), basis_k (n_k, 3V)) -> (B, V, 3), in the
        coefficients' dtype.
    """
    present = [(c, b) for c, b in terms if c is not None]
    if not present:
        raise ValueError("linear_shape: needs at least one set of coefficients for the batch size")
    ref = present[0][0]
    flat = neutral.reshape(1, -1).to(ref.dtype).expand(ref.shape[0], -1)
    for coeffs, basis in present:
        flat = flat + coeffs @ basis.to(ref.dtype)
    return flat.reshape(ref.shape[0], -1, 3)


@dataclass
class MorphableModel:
    """A linear morphable model over ``V`` vertices.

    Attributes (torch tensors unless noted):
        name: model kind and region, e.g. ``"ict"`` or ``"ict/face"`` (str).
        neutral: (V, 3) mean / neutral shape, mm.
        identity_basis: (n_identity, V, 3) basis scaled by the per-component standard deviations,
            so identity coefficients are ~ N(0, 1).
        identity_std: (n_identity,) those standard deviations in the units of the raw basis (mm for
            an orthonormal basis such as BFM's; ones for ICT, whose files are already +1 std).
        expression_basis: (n_expression, V, 3) deltas per unit coefficient.
        expression_std: (n_expression,) standard deviations (ones for ICT blendshapes).
        expression_names: names of the expression components (ARKit-like for ICT) (list of str).
        expression_range: (low, high) bounds of the expression weights, ``(0, 1)`` for ICT
            blendshapes, ``None`` for unbounded PCA coefficients ~ N(0, 1).
        triangles: (F, 3) int64 vertex indices, counter-clockwise seen from outside.
        landmark_indices: (68,) int64 vertex ids of the iBUG 68 landmarks, or None.
        jawline_candidates: ``"right"`` / ``"left"`` -> (K,) vertex ids of the extended jawline on
            the side of landmarks 0-7 / 9-16, in the order method.md lists them, for sliding contour landmarks;
            ``"right_landmarks"`` / ``"left_landmarks"`` -> (8,) the jawline vertex of each of
            landmarks 0-7 / 9-16. Empty where the model does not define them (BFM).
        regions: region name -> (R,) vertex ids into this model.
        vertex_ids: (V,) ids of these vertices in the full model the files describe.
        albedo_mean: (V, 3) in [0, 1] or None; albedo_basis (n_albedo, V, 3) scaled by std, or None.
        uvs: (T, 2) texture coordinates or None; uv_triangles: (F, 3) per-corner ids into ``uvs``.
        units: always ``"mm"``.
    """

    name: str
    neutral: torch.Tensor
    identity_basis: torch.Tensor
    identity_std: torch.Tensor
    expression_basis: torch.Tensor
    expression_std: torch.Tensor
    expression_names: List[str]
    expression_range: Optional[Tuple[float, float]]
    triangles: torch.Tensor
    landmark_indices: Optional[torch.Tensor] = None
    jawline_candidates: Dict[str, torch.Tensor] = field(default_factory=dict)
    regions: Dict[str, torch.Tensor] = field(default_factory=dict)
    vertex_ids: Optional[torch.Tensor] = None
    albedo_mean: Optional[torch.Tensor] = None
    albedo_basis: Optional[torch.Tensor] = None
    uvs: Optional[torch.Tensor] = None
    uv_triangles: Optional[torch.Tensor] = None
    units: str = "mm"

    def __post_init__(self) -> None:
        v = self.neutral.shape[0]
        if self.neutral.shape != (v, 3):
            raise FaceModelError(f"{self.name}: neutral must be (V, 3), got {tuple(self.neutral.shape)}")
        for attr in ("identity_basis", "expression_basis", "albedo_basis"):
            basis = getattr(self, attr)
            if basis is not None and basis.shape[1:] != (v, 3):
                raise FaceModelError(
                    f"{self.name}: {attr} must be (n, {v}, 3), got {tuple(basis.shape)}")
        if len(self.expression_names) != self.expression_basis.shape[0]:
            raise FaceModelError(f"{self.name}: {len(self.expression_names)} expression names for "
                                 f"{self.expression_basis.shape[0]} expression components")
        if self.vertex_ids is None:
            self.vertex_ids = torch.arange(v)
        # Flattened bases (3V, n) make `vertices` one matrix product per basis.
        self._id_flat = self.identity_basis.reshape(self.n_identity, -1).T
        self._exp_flat = self.expression_basis.reshape(self.n_expression, -1).T

    # ----------------------------------------------------------------- sizes
    @property
    def n_vertices(self) -> int:
        return int(self.neutral.shape[0])

    @property
    def n_identity(self) -> int:
        return int(self.identity_basis.shape[0])

    @property
    def n_expression(self) -> int:
        return int(self.expression_basis.shape[0])

    @property
    def n_albedo(self) -> int:
        return 0 if self.albedo_basis is None else int(self.albedo_basis.shape[0])

    @property
    def dtype(self) -> torch.dtype:
        return self.neutral.dtype

    @property
    def device(self) -> torch.device:
        return self.neutral.device

    # ----------------------------------------------------------- evaluation
    def _coefficients(self, coeffs: Optional[torch.Tensor], n: int, what: str,
                      batch: Optional[int]) -> Optional[torch.Tensor]:
        if coeffs is None:
            return None
        if coeffs.ndim != 2 or coeffs.shape[1] != n:
            raise ValueError(f"{what} coefficients must have shape (B, {n}), got {tuple(coeffs.shape)}")
        if batch is not None and coeffs.shape[0] != batch:
            raise ValueError(f"{what} coefficients have batch {coeffs.shape[0]}, expected {batch}")
        return coeffs.to(self.dtype)

    def vertices(self, identity: Optional[torch.Tensor] = None,
                 expression: Optional[torch.Tensor] = None) -> torch.Tensor:
        """Evaluate meshes for a batch of coefficients (either may be None = zeros).

        Shape:
            identity (B, n_identity), expression (B, n_expression) -> (B, V, 3) in mm.
        """
        if identity is None and expression is None:
            raise ValueError("vertices() needs identity or expression coefficients to know the batch size")
        identity = self._coefficients(identity, self.n_identity, "identity", None)
        batch = identity.shape[0] if identity is not None else None
        expression = self._coefficients(expression, self.n_expression, "expression", batch)
        return linear_shape(self.neutral, (identity, self._id_flat.T), (expression, self._exp_flat.T))

    def albedo(self, coeffs: Optional[torch.Tensor] = None, batch: int = 1) -> torch.Tensor:
        """Per-vertex albedo in [0, 1] from albedo coefficients ~ N(0, 1).

        Shape:
            coeffs (B, n_albedo) or None -> (B, V, 3).
        """
        if self.albedo_mean is None:
            raise FaceModelError(f"{self.name} has no albedo model (ICT: albedo is estimated per vertex)")
        if coeffs is None:
            return self.albedo_mean.unsqueeze(0).expand(batch, -1, -1)
        coeffs = self._coefficients(coeffs, self.n_albedo, "albedo", None)
        return self.albedo_mean + torch.einsum("bk,kvc->bvc", coeffs, self.albedo_basis)

    # ----------------------------------------------------- dtype and device
    def to(self, device: Union[str, torch.device, None] = None,
           dtype: Optional[torch.dtype] = None) -> "MorphableModel":
        """A copy with floating tensors cast to ``dtype`` and everything moved to ``device``."""

        def move(x):
            if isinstance(x, torch.Tensor):
                return x.to(device=device, dtype=dtype if x.is_floating_point() else None)
            if isinstance(x, dict):
                return {k: move(v) for k, v in x.items()}
            return x

        return replace(self, **{f.name: move(getattr(self, f.name)) for f in fields(self)})

    def double(self) -> "MorphableModel":
        return self.to(dtype=torch.float64)

    # --------------------------------------------------------------- regions
    def region(self, name_or_ids: Union[str, Sequence[int], torch.Tensor]) -> "MorphableModel":
        """A smaller model over a subset of vertices (a named region or explicit vertex ids).

        Triangles with all three corners inside are kept and re-indexed; landmarks, jawlines and
        regions are re-indexed too (landmarks outside the subset make the region unusable for
        fitting, so that raises). No file is copied: the bases are sliced in memory.
        """
        if isinstance(name_or_ids, str):
            if name_or_ids not in self.regions:
                raise KeyError(f"{self.name} has no region {name_or_ids!r}; known: {sorted(self.regions)}")
            ids = self.regions[name_or_ids]
            label = name_or_ids
        else:
            ids = torch.as_tensor(name_or_ids, dtype=torch.long)
            label = f"subset{len(ids)}"
        ids = torch.unique(ids.long())
        remap = subset_index(ids, self.n_vertices)

        def reindex(vids: torch.Tensor) -> torch.Tensor:
            out = remap[vids]
            return out[out >= 0]

        tri_new, keep = triangles_within(self.triangles, remap)
        landmarks = None
        if self.landmark_indices is not None:
            landmarks = remap[self.landmark_indices]
            if (landmarks < 0).any():
                raise ValueError(f"region {label!r} of {self.name} does not contain all 68 landmark vertices")
        return MorphableModel(
            name=f"{self.name.split('/')[0]}/{label}",
            neutral=self.neutral[ids],
            identity_basis=self.identity_basis.index_select(1, ids),  # [:, ids], 3x quicker
            identity_std=self.identity_std,
            expression_basis=self.expression_basis.index_select(1, ids),
            expression_std=self.expression_std,
            expression_names=list(self.expression_names),
            expression_range=self.expression_range,
            triangles=tri_new,
            landmark_indices=landmarks,
            jawline_candidates={k: reindex(v) for k, v in self.jawline_candidates.items()},
            regions={k: reindex(v) for k, v in self.regions.items()},
            vertex_ids=self.vertex_ids[ids],
            albedo_mean=None if self.albedo_mean is None else self.albedo_mean[ids],
            albedo_basis=None if self.albedo_basis is None else self.albedo_basis.index_select(1, ids),
            uvs=self.uvs,
            uv_triangles=None if self.uv_triangles is None else self.uv_triangles[keep],
            units=self.units,
        )

    # --------------------------------------------------------------- summary
    def summary(self) -> str:
        """A few human-readable lines describing the model."""
        extent = (self.neutral.max(0).values - self.neutral.min(0).values).tolist()
        lines = [
            f"model {self.name}: {self.n_vertices} vertices, {len(self.triangles)} triangles, units {self.units}",
            f"  identity components: {self.n_identity}, expression components: {self.n_expression}"
            + (f" (weights in [{self.expression_range[0]}, {self.expression_range[1]}])"
               if self.expression_range else " (coefficients ~ N(0, 1))"),
            f"  albedo components: {self.n_albedo}" + ("" if self.albedo_mean is not None else " (no albedo model)"),
            f"  landmarks: {0 if self.landmark_indices is None else len(self.landmark_indices)}, "
            f"UVs: {'yes' if self.uvs is not None else 'no'}, regions: {', '.join(sorted(self.regions))}",
            "  extent (mm): " + " x ".join(f"{e:.1f}" for e in extent),
        ]
        if self.landmark_indices is not None and len(self.landmark_indices) == 68:
            eyes = self.neutral[self.landmark_indices[36]] - self.neutral[self.landmark_indices[45]]
            lines.append(f"  outer eye corner distance: {float(eyes.norm()):.1f} mm")
        if self.expression_names:
            lines.append("  expressions: " + ", ".join(self.expression_names[:6])
                         + (", ..." if self.n_expression > 6 else ""))
        return "\n".join(lines)


def model_from_arrays(a: dict, dtype: torch.dtype = torch.float32) -> MorphableModel:
    """Build a `MorphableModel` from the plain numpy arrays the file loaders return."""
    t = lambda key: _as_tensor(a.get(key), dtype)  # noqa: E731
    rng = a.get("expression_range")
    return MorphableModel(
        name=str(a["name"]),
        neutral=t("neutral"),
        identity_basis=t("identity_basis"),
        identity_std=t("identity_std"),
        expression_basis=t("expression_basis"),
        expression_std=t("expression_std"),
        expression_names=[str(n) for n in a["expression_names"]],
        expression_range=None if rng is None else (float(rng[0]), float(rng[1])),
        triangles=t("triangles"),
        landmark_indices=t("landmark_indices"),
        jawline_candidates={k: _as_tensor(v, dtype) for k, v in a.get("jawline_candidates", {}).items()},
        regions={k: _as_tensor(v, dtype) for k, v in a.get("regions", {}).items()},
        vertex_ids=t("vertex_ids"),
        albedo_mean=t("albedo_mean"),
        albedo_basis=t("albedo_basis"),
        uvs=t("uvs"),
        uv_triangles=t("uv_triangles"),
    )


class VertexSubset:
    """A model restricted to some of its vertices, evaluated without the rest of the mesh (the
    landmark fit's few dozen vertices, the photometric and feature-metric terms' samples).

    Shape: vertex_ids (M,); neutral (M, 3); identity_basis (M, 3, n_id); expression_basis
    (M, 3, n_exp) (the layout per-point Jacobians take).
    """

    def __init__(self, model: MorphableModel, vertex_ids: torch.Tensor) -> None:
        self.vertex_ids = vertex_ids.long()
        self.n_identity, self.n_expression = model.n_identity, model.n_expression
        self.neutral = model.neutral[self.vertex_ids]
        self.identity_basis = model.identity_basis[:, self.vertex_ids].permute(1, 2, 0).contiguous()
        self.expression_basis = model.expression_basis[:, self.vertex_ids].permute(1, 2, 0).contiguous()
        self._id_flat = self.identity_basis.reshape(-1, self.n_identity)
        self._exp_flat = self.expression_basis.reshape(-1, self.n_expression)

    def points(self, identity: Optional[torch.Tensor], expression: Optional[torch.Tensor]) -> torch.Tensor:
        """Positions of the subset's vertices (mm); None coefficients are zeros.

        Shape:
            identity (B, n_id) or None, expression (B, n_exp) or None -> (B, M, 3).
        """
        for name, coeffs, n in (("identity", identity, self.n_identity), ("expression", expression,
                                                                          self.n_expression)):
            if coeffs is not None and (coeffs.dim() != 2 or coeffs.shape[1] != n):
                raise ValueError(f"{name}: expected shape (B, {n}), got {tuple(coeffs.shape)}")
        return linear_shape(self.neutral, (identity, self._id_flat.T), (expression, self._exp_flat.T))
