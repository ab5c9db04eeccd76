"""Rigs and animations for 3D tools: glTF 2.0 (named morph targets, animation) and Live Link Face CSV.

Library calls (the command line is ``python -m utils.export``, see `utils.export.__main__`)::

    from utils.export import export_files, export_rig, export_animation, export_live_link_csv
    export_files("out/rig/rig.npz", "out/export", tracking_path="out/videos/tracking.npz")

Modules: `arkit` (names, ARKit weights, the CSV), `gltf` (the .glb writer), `motion` (held frames,
head quaternions), `outputs` (the jobs that check inputs and write files).
"""
from utils.export.arkit import ARKIT_NAMES, LIVE_LINK_HEADER, arkit_name, target_mapping, to_arkit_weights
from utils.export.errors import ExportError
from utils.export.gltf import GltfOptions
from utils.export.outputs import (FORMATS, animation_keys, export_animation, export_files,
                                  export_live_link_csv, export_rig, rig_mesh, rig_weights)

__all__ = ["ARKIT_NAMES", "LIVE_LINK_HEADER", "arkit_name", "target_mapping", "to_arkit_weights", "ExportError",
           "GltfOptions", "FORMATS", "animation_keys", "export_animation", "export_files", "export_live_link_csv", "export_rig",
           "rig_mesh", "rig_weights"]
