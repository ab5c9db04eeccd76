"""Face models: the linear morphable model and its loaders (ICT-FaceKit, BFM 2009, face3d).

    >>> from core.face_model import load_face_model
    >>> face = load_face_model("ict", "external/ICT-FaceKit").region("face")
    >>> face.n_vertices, face.n_identity, face.n_expression, face.units
    (9409, 100, 53, 'mm')
"""
from core.face_model.load import load_face_model
from core.face_model.model import FaceModelError, MorphableModel

__all__ = ["FaceModelError", "MorphableModel", "load_face_model"]
