"""Check exported glTF files in real clients: the Khronos glTF validator and Blender.

Installing the clients (kept out of the project's requirements; about 1 GB; see
benchmarks/README_exports.md). They live in a tools folder, by default ``../tools`` beside the
repository (``INORIG_EXPORT_TOOLS`` names another one)::

    TOOLS=../tools
    # Blender as a Python module: bpy 5.0.1 is the newest wheel for Python 3.11 and needs numpy < 2
    python3.11 -m venv $TOOLS/bpy-venv
    $TOOLS/bpy-venv/bin/pip install "bpy==5.0.1" "numpy<2"
    # the Khronos glTF validator (npm package, a library without a command line; node >= 18)
    mkdir -p $TOOLS/gltf-validator && (cd $TOOLS/gltf-validator && npm init -y && npm install gltf-validator)

Usage (project venv)::

    python -m utils.export out/rig/rig.npz --tracking out/videos/tracking.npz --out out/export
    python -m benchmarks.check_exports out/export/rig.glb out/export/animation.glb \
        [--rig out/rig/rig.npz --tracking out/videos/tracking.npz] [--names arkit] [--json report.json]

(a) the validator's errors / warnings for both files; (b) Blender (run in its own venv as a
subprocess) imports ``rig.glb`` (a shape key per target, under the expected names) and
``animation.glb`` (an action with a key per video frame for every shape key and the head), and its
evaluated mesh at a few frames is compared with ``neutral + weights x targets`` (max error, metres)
and its head rotation with the tracked one (max angle, degrees). With ``--rig`` / ``--tracking``
the expected values come from the npz files through the exporter's mapping, else from the .glb.
Exit status 0 when both clients accept the files within the tolerances, 1 otherwise.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Optional

import numpy as np

REPO_ROOT = Path(__file__).resolve().parents[1]

logger = logging.getLogger("check_exports")

TOOLS_ENV = "INORIG_EXPORT_TOOLS"
MESH_TOLERANCE_M = 1e-6
ANGLE_TOLERANCE_DEG = 1e-3


@dataclass(frozen=True)
class Tools:
    """Where the clients are: the bpy venv's python and the gltf-validator package folder."""

    blender_python: Path
    validator: Path

    @classmethod
    def find(cls, root: Optional[Path] = None) -> "Tools":
        root = Path(root or os.environ.get(TOOLS_ENV) or REPO_ROOT.parent / "tools")
        return cls(root / "bpy-venv" / "bin" / "python", root / "gltf-validator" / "node_modules" / "gltf-validator")

    def missing(self) -> list:
        """What is absent, as readable reasons (empty when everything is there)."""
        out = []
        if not self.blender_python.is_file():
            out.append(f"no Blender venv python at {self.blender_python}")
        if not (self.validator / "package.json").is_file():
            out.append(f"no gltf-validator package at {self.validator}")
        if not _has_node():
            out.append("no node executable on PATH")
        return out


def _has_node() -> bool:
    try:
        return subprocess.run(["node", "--version"], capture_output=True, timeout=30).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


# ------------------------------------------------------------------ (a) the Khronos validator
_VALIDATE_JS = """
const fs = require('fs');
const validator = require(process.argv[2]);
const file = process.argv[3];
validator.validateBytes(new Uint8Array(fs.readFileSync(file)), {uri: file, maxIssues: 100})
  .then(r => console.log(JSON.stringify({errors: r.issues.numErrors, warnings: r.issues.numWarnings,
                                         infos: r.issues.numInfos, hints: r.issues.numHints,
                                         messages: r.issues.messages.slice(0, 20),
                                         validator: r.validatorVersion})))
  .catch(e => { console.error(String(e)); process.exit(3); });
"""


def validate(path: Path, tools: Tools) -> Dict:
    """The Khronos validator's report of one file: counts of errors / warnings / infos / hints and the first messages."""
    with tempfile.TemporaryDirectory() as tmp:
        script = Path(tmp) / "validate.js"
        script.write_text(_VALIDATE_JS)
        run = subprocess.run(["node", str(script), str(tools.validator), str(path)], capture_output=True,
                             text=True, timeout=300)
    if run.returncode != 0:
        raise RuntimeError(f"gltf-validator failed on {path}: {run.stderr.strip()}")
    return json.loads(run.stdout)


# ------------------------------------------------------------------ (b) Blender
_BLENDER_SCRIPT = r'''
import json, math, sys
import numpy as np
import bpy
from mathutils.kdtree import KDTree

rig_glb, anim_glb, expected_path, out_path = sys.argv[-4:]
exp = np.load(expected_path)
names = [str(n) for n in exp["names"]]
C = np.array([[1.0, 0, 0], [0, 0, 1.0], [0, -1.0, 0]])  # glTF = C @ Blender (the importer's +y up -> +z up)


def load(path):
    bpy.ops.wm.read_factory_settings(use_empty=True)
    bpy.ops.import_scene.gltf(filepath=path)
    meshes = [o for o in bpy.data.objects if o.type == "MESH"]
    return meshes[0], [o for o in bpy.data.objects if o.type != "MESH"]


def scale(obj):
    """The mesh object's own uniform scale (not 1 for KHR_mesh_quantization files)."""
    return float(obj.matrix_basis.to_scale()[0])


def coords(obj):
    """Evaluated vertex positions (shape keys applied) in the object's parent space, glTF axes."""
    depsgraph = bpy.context.evaluated_depsgraph_get()
    ev = obj.evaluated_get(depsgraph)
    mesh = ev.to_mesh()
    co = np.empty(len(mesh.vertices) * 3)
    mesh.vertices.foreach_get("co", co)
    ev.to_mesh_clear()
    return co.reshape(-1, 3) @ C.T * scale(obj)


def key_coords(obj, key):
    return np.array([v.co[:] for v in key.data]) @ C.T * scale(obj)


def fcurves(action):
    out = []
    for layer in getattr(action, "layers", []):
        for strip in layer.strips:
            for bag in strip.channelbags:
                out.extend(bag.fcurves)
    return out or list(getattr(action, "fcurves", []))


report = {"blender": bpy.app.version_string}
# rig.glb: one shape key per target, named as expected
obj, _ = load(rig_glb)
keys = obj.data.shape_keys.key_blocks if obj.data.shape_keys else []
report["rig_vertices"] = len(obj.data.vertices)
report["rig_shape_keys"] = [k.name for k in keys][1:]
report["rig_names_match"] = report["rig_shape_keys"] == names
basis = key_coords(obj, keys[0]) if len(keys) else coords(obj)
tree = KDTree(len(exp["neutral"]))
for i, p in enumerate(exp["neutral"]):
    tree.insert(p, i)
tree.balance()
match = [tree.find(p) for p in basis]
order = np.array([m[1] for m in match])
report["rig_vertex_match_m"] = float(max(m[2] for m in match))
report["rig_vertex_order_kept"] = bool(np.array_equal(order, np.arange(len(order))))
if len(keys):
    report["rig_target_max_error_m"] = float(max(
        np.abs(key_coords(obj, k) - basis - exp["targets"][t][order]).max()
        for t, k in enumerate(keys[1:])))

# animation.glb: an action with one key per frame, mesh and head as expected
obj, others = load(anim_glb)
scene = bpy.context.scene
fps = scene.render.fps / scene.render.fps_base
head = obj.parent
key_action = obj.data.shape_keys.animation_data.action if obj.data.shape_keys and obj.data.shape_keys.animation_data else None
head_action = head.animation_data.action if head is not None and head.animation_data else None
curves = fcurves(key_action) if key_action else []
report["actions"] = [a.name for a in bpy.data.actions]
report["shape_key_curves"] = len([c for c in curves if c.data_path.startswith("key_blocks")])
counts = [len(c.keyframe_points) for c in curves] + [len(c.keyframe_points) for c in (fcurves(head_action) if head_action else [])]
report["keys_per_curve"] = [min(counts), max(counts)] if counts else [0, 0]
frames = np.array([k.co[0] for k in curves[0].keyframe_points]) if curves else np.zeros(0)
want = exp["times"] * fps
report["frames"] = len(frames)
report["frame_range"] = [float(frames.min()), float(frames.max())] if len(frames) else None
report["frames_match"] = bool(len(frames) == len(want) and np.abs(frames - want).max() < 1e-3)
basis = key_coords(obj, obj.data.shape_keys.key_blocks[0])
order = np.array([tree.find(p)[1] for p in basis])
mesh_err, angle_err, checked = 0.0, 0.0, []
for i in [int(i) for i in exp["check"]]:
    f = float(want[i])
    scene.frame_set(int(math.floor(f)), subframe=f - math.floor(f))
    got = coords(obj)
    expected = exp["neutral"] + np.tensordot(exp["weights"][i], exp["targets"], axes=1)
    mesh_err = max(mesh_err, float(np.linalg.norm(got - expected[order], axis=1).max()))
    if head is not None:
        R = C @ np.array(head.matrix_world.to_3x3()) @ C.T
        x, y, z, w = exp["rotations"][i]
        Re = np.array([[1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
                       [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
                       [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)]])
        # |R - Re|_F = 2 sqrt(2) sin(angle / 2): accurate for small angles, unlike acos of the trace
        s = min(1.0, float(np.linalg.norm(R - Re)) / (2 * math.sqrt(2)))
        angle_err = max(angle_err, math.degrees(2 * math.asin(s)))
    checked.append(i)
report["checked_frames"] = checked
report["mesh_max_error_m"] = mesh_err
report["head_max_angle_deg"] = angle_err
json.dump(report, open(out_path, "w"))
'''


def expected_values(rig_glb: Path, animation_glb: Path, rig_npz: Optional[Path], tracking_npz: Optional[Path],
                    names: str) -> Dict[str, np.ndarray]:
    """Names, neutral, targets (metres, glTF axes), per-frame weights, head quaternions and key times."""
    from utils.export.gltf_read import read_glb

    if rig_npz is None or tracking_npz is None:
        rig, anim = read_glb(rig_glb), read_glb(animation_glb)
        return {"names": np.array(rig.target_names), "neutral": rig.positions.astype(np.float64),
                "targets": rig.targets.astype(np.float64), "weights": anim.weights.astype(np.float64),
                "rotations": anim.rotations.astype(np.float64), "times": anim.times.astype(np.float64)}
    from core.rig.rig import Rig
    from utils.export.outputs import animation_keys, rig_mesh
    from utils.io.tracking import load_tracking

    rig, tracking = Rig.load(rig_npz), load_tracking(tracking_npz)
    mesh = rig_mesh(rig, names)  # type: ignore[arg-type]
    weights, rotations = animation_keys(rig, tracking, names)  # type: ignore[arg-type]
    return {"names": np.array(mesh.target_names), "neutral": mesh.positions.astype(np.float64),
            "targets": mesh.targets.astype(np.float64), "weights": weights.astype(np.float64),
            "rotations": rotations.astype(np.float64), "times": tracking.times}


def blender_check(rig_glb: Path, animation_glb: Path, expected: Dict[str, np.ndarray], tools: Tools,
                  n_check: int = 5) -> Dict:
    """Import both files in Blender (subprocess in the bpy venv) and compare with ``expected``."""
    n = len(expected["times"])
    check = np.unique(np.linspace(0, n - 1, min(n_check, n)).round().astype(int))
    with tempfile.TemporaryDirectory() as tmp:
        exp_path, out_path, script = Path(tmp) / "expected.npz", Path(tmp) / "report.json", Path(tmp) / "check.py"
        np.savez(exp_path, check=check, **expected)
        script.write_text(_BLENDER_SCRIPT)
        run = subprocess.run([str(tools.blender_python), str(script), str(rig_glb), str(animation_glb),
                              str(exp_path), str(out_path)], capture_output=True, text=True, timeout=900)
        if run.returncode != 0 or not out_path.is_file():
            raise RuntimeError(f"Blender check failed (exit {run.returncode}): {run.stderr.strip()[-2000:]}")
        report = json.loads(out_path.read_text())
    report["expected_frames"] = n
    return report


def mesh_tolerance(animation_glb: Path, weights: np.ndarray) -> float:
    """`MESH_TOLERANCE_M`, or the rounding bound of a KHR_mesh_quantization file.

    Quantized coordinates are off by at most half a step per component: ``|error| <= step / 2 *
    sqrt(3) * (1 + sum_t |w_t|)`` for the base and the weighted targets.
    """
    from pygltflib import GLTF2

    gltf = GLTF2().load_binary(str(animation_glb))
    if "KHR_mesh_quantization" not in (gltf.extensionsUsed or []):
        return MESH_TOLERANCE_M
    scale = next(float(n.scale[0]) for n in gltf.nodes if n.mesh is not None and n.scale)
    step = scale / 32767.0
    return MESH_TOLERANCE_M + step / 2 * np.sqrt(3) * (1 + float(np.abs(weights).sum(axis=1).max()))


def verdict(validation: Dict[str, Dict], blender: Dict) -> list:
    """The failed checks, as readable lines (empty: all passed)."""
    problems = [f"validator: {name} has {r['errors']} errors" for name, r in validation.items() if r["errors"]]
    if not blender["rig_names_match"]:
        problems.append("Blender: rig.glb shape keys differ from the expected names")
    if not blender["frames_match"] or blender["keys_per_curve"] != [blender["expected_frames"]] * 2:
        problems.append(f"Blender: action keys {blender['keys_per_curve']} for {blender['expected_frames']} frames")
    if blender["mesh_max_error_m"] > blender["mesh_tolerance_m"]:
        problems.append(f"Blender: evaluated mesh off by {blender['mesh_max_error_m']:.3g} m "
                        f"(tolerance {blender['mesh_tolerance_m']:.3g} m)")
    if blender["head_max_angle_deg"] > ANGLE_TOLERANCE_DEG:
        problems.append(f"Blender: head rotation off by {blender['head_max_angle_deg']:.3g} deg")
    return problems


def check_exports(rig_glb: Path, animation_glb: Path, rig_npz: Optional[Path] = None,
                  tracking_npz: Optional[Path] = None, names: str = "arkit", tools: Optional[Tools] = None,
                  n_check: int = 5) -> Dict:
    """Run both clients; returns ``{"validator": {file: report}, "blender": report, "problems": [...]}``."""
    tools = tools or Tools.find()
    missing = tools.missing()
    if missing:
        raise RuntimeError("; ".join(missing) + " (see benchmarks/README_exports.md)")
    validation = {p.name: validate(p, tools) for p in (rig_glb, animation_glb)}
    expected = expected_values(rig_glb, animation_glb, rig_npz, tracking_npz, names)
    blender = blender_check(rig_glb, animation_glb, expected, tools, n_check)
    blender["mesh_tolerance_m"] = mesh_tolerance(animation_glb, expected["weights"])
    return {"validator": validation, "blender": blender, "problems": verdict(validation, blender)}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("rig_glb", type=Path)
    p.add_argument("animation_glb", type=Path)
    p.add_argument("--rig", type=Path, help="the rig.npz the files were made from (expected values from it)")
    p.add_argument("--tracking", type=Path, help="the tracking.npz the animation was made from")
    p.add_argument("--names", choices=("arkit", "model"), default="arkit", help="the --names of the export")
    p.add_argument("--frames", type=int, default=5, help="frames at which the evaluated mesh is compared")
    p.add_argument("--json", type=Path, help="write the full report here")
    args = p.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    result = check_exports(args.rig_glb, args.animation_glb, args.rig, args.tracking, args.names, n_check=args.frames)
    for name, r in result["validator"].items():
        logger.info("validator %s: %d errors, %d warnings, %d infos, %d hints %s", name, r["errors"], r["warnings"],
                    r["infos"], r["hints"], [m.get("code") for m in r["messages"]][:10])
    b = result["blender"]
    logger.info("Blender %s: rig.glb %d vertices, %d shape keys, names match: %s, target error %.3g m; "
                "animation.glb: %d shape-key curves, keys per curve %s for %d frames (frames %s), "
                "mesh error %.3g m (tolerance %.3g) and head %.3g deg at frames %s", b["blender"], b["rig_vertices"],
                len(b["rig_shape_keys"]), b["rig_names_match"], b.get("rig_target_max_error_m", float("nan")),
                b["shape_key_curves"], b["keys_per_curve"], b["expected_frames"], b["frame_range"],
                b["mesh_max_error_m"], b["mesh_tolerance_m"], b["head_max_angle_deg"], b["checked_frames"])
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))
    for line in result["problems"]:
        logger.error("FAIL %s", line)
    return 1 if result["problems"] else 0


if __name__ == "__main__":
    sys.exit(main())
