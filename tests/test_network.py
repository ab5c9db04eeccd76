"""The network (models/, train.py): shapes, analytic pieces, weights files, training, shipped weights.

Known answers where there are some (closed-form similarity, zero-initialized heads, the
feature-metric block's Jacobian against autodiff and finite differences), round trips for the
weights files, and end-to-end checks that training lowers the loss and that the shipped network's
unrolled solver converges on a synthetic subject.
"""
from __future__ import annotations

import csv
import re
from pathlib import Path

import pytest
import torch

from core.camera import euler_to_matrix, weak_perspective_project
from core.face_model.model import VertexSubset
from core.fitting.photometric import photometric_block, sampled_block
from core.fitting.solver import IterationState, block_jacobian
from core.rig.rig import CorrectiveBasis
from models.backbone import FeatureExtractor
from models.heads import InitHead, fit_similarity, normalize_landmarks
from models.inorig import BLOCK_NAMES, INORig, NetworkConfig
from models.rig_decoder import NeuralRigDecoder
from models.solver_control import SolverControlNet
from models.weights import NetworkWeightsError, load_network, save_network

REPO_ROOT = Path(__file__).resolve().parents[1]
SHIPPED_WEIGHTS = REPO_ROOT / "net_weights" / "inorig_ict.pth"
SMALL = NetworkConfig(image_size=128, widths=(8, 16, 32, 64), feature_vertices=32, levels=2, iterations=1,
                      rig_code_dim=8, head_hidden=32)
PER_IMAGE = ("expression", "rotation", "scale", "trans2d")


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    """Relative error |a - b| / |b|."""
    return float((a - b).norm() / b.norm().clamp(min=1e-12))


def _inputs(net: INORig, p: int, g: int, size: int, seed: int = 0):
    """Random crops and face-like landmarks: the model's, posed and scaled into the crop, plus noise."""
    gen = torch.Generator().manual_seed(seed)
    face = net.face
    params = {"identity": torch.randn(p, face.n_identity, generator=gen),
              "expression": 0.3 * torch.rand(p, g, face.n_expression, generator=gen),
              "rotation": 0.3 * torch.randn(p, g, 3, generator=gen),
              "scale": torch.full((p, g), size / 200.0), "trans2d": torch.full((p, g, 2), size / 2.0)}
    with torch.no_grad():
        landmarks = net.projected_landmarks(params) + 0.01 * size * torch.randn(p, g, 68, 2, generator=gen)
    return torch.rand(p, g, 3, size, size, generator=gen), landmarks


@pytest.fixture(scope="module")
def small_net(ict_face) -> INORig:
    """The small network, untrained, eval mode."""
    torch.manual_seed(0)
    return INORig(ict_face, SMALL).eval()


@pytest.fixture(scope="module")
def perturbed_net(ict_face) -> INORig:
    """The small network with every zero-initialized output layer made non-zero (eval mode)."""
    torch.manual_seed(1)
    net = INORig(ict_face, SMALL)
    gen = torch.Generator().manual_seed(2)
    with torch.no_grad():
        for layer in (net.head.rotation, net.head.identity, net.head.expression, net.rig_decoder.decoder[-1],
                      net.control.mlp[-1]):
            layer.weight.copy_(0.05 * torch.randn(layer.weight.shape, generator=gen))
            layer.bias.copy_(0.05 * torch.randn(layer.bias.shape, generator=gen))
        net.canonical.copy_(0.1 * torch.randn(net.canonical.shape, generator=gen))
    return net.eval()


# ------------------------------------------------------------------ 1. shapes
def test_feature_extractor_shapes():
    net = FeatureExtractor(widths=(8, 16, 32, 64), feature_channels=5).eval()
    with torch.no_grad():
        feats, pooled = net(torch.rand(2, 3, 256, 256))
        small, _ = net(torch.rand(1, 3, 128, 128))
    assert feats.shape == (2, 5, 64, 64) and pooled.shape == (2, 64) and small.shape == (1, 5, 32, 32)
    assert torch.isfinite(feats).all() and float(feats.std()) > 0
    with pytest.raises(ValueError, match=re.escape("(N, 3, H, W)")):
        net(torch.rand(2, 1, 64, 64))


def test_network_forward_shapes(small_net, ict_face):
    images, landmarks = _inputs(small_net, 2, 2, 128)
    with torch.no_grad():
        out = small_net(images, landmarks)
        regression = small_net(images, landmarks, solve_steps=False)
    k, v = ict_face.n_expression, ict_face.n_vertices
    expected = {"identity": (2, ict_face.n_identity), "expression": (2, 2, k), "rotation": (2, 2, 3),
                "scale": (2, 2), "trans2d": (2, 2, 2)}
    assert {n: tuple(t.shape) for n, t in out.params.items()} == expected
    assert len(out.stages) == 1 + SMALL.levels and len(regression.stages) == 1
    assert all({n: tuple(t.shape) for n, t in s.items()} == expected for s in out.stages)
    assert out.rig_code.shape == (2, SMALL.rig_code_dim) and out.correctives.shape == (2, k, v, 3)
    assert out.neutral.shape == (2, v, 3) and out.vertices.shape == (2, 2, v, 3)
    assert len(out.block_costs) == SMALL.levels and regression.block_costs == []
    assert set(out.block_costs[0]) == set(BLOCK_NAMES[:3])  # feature terms from level 1 on
    assert set(out.block_costs[1]) == set(BLOCK_NAMES)
    assert all(c.shape == (2,) and bool(torch.isfinite(c).all()) for c in out.block_costs[1].values())
    # Even untrained, the unrolled solver pulls the model landmarks onto the targets.
    errors = [float((small_net.projected_landmarks(s) - landmarks).norm(dim=-1).mean()) for s in out.stages]
    assert errors[-1] < 0.5 * errors[0], errors
    # Untrained: no correctives, so the meshes are the plain model's.
    neutral, vertices = small_net.meshes(out.params["identity"], out.params["expression"])
    torch.testing.assert_close(out.vertices, vertices)
    torch.testing.assert_close(out.neutral, neutral)


def test_network_rejects_wrong_shapes(small_net):
    images, landmarks = _inputs(small_net, 2, 2, SMALL.image_size)
    with pytest.raises(ValueError, match=re.escape("(P, G, 3, H, W)")):
        small_net(images[0], landmarks)
    with pytest.raises(ValueError, match=f"{SMALL.image_size} x {SMALL.image_size} crops"):
        small_net(images[..., :64, :64], landmarks)
    with pytest.raises(ValueError, match=re.escape("(2, 2, 68, 2)")):
        small_net(images, landmarks[:, :, :60])
    with pytest.raises(ValueError, match=re.escape("(2, 2, 68)")):
        small_net(images, landmarks, confidence=torch.ones(2, 68))
    with pytest.raises(ValueError, match=re.escape("(3, 68, 2)")):
        small_net.build_rig(images[0].repeat(2, 1, 1, 1)[:3], landmarks[0])


# ------------------------------------------------------------------ 2. analytic pieces
def test_fit_similarity_recovers_scale_and_translation():
    gen = torch.Generator().manual_seed(3)
    points = 60 * torch.randn(3, 51, 3, generator=gen, dtype=torch.float64)
    rotation = 0.4 * torch.randn(3, 3, generator=gen, dtype=torch.float64)
    scale = torch.tensor([0.8, 1.3, 2.1], dtype=torch.float64)
    trans = torch.tensor([[128.0, 120.0], [90.0, 140.0], [10.0, -5.0]], dtype=torch.float64)
    targets = weak_perspective_project(points, euler_to_matrix(rotation), scale, trans)
    fit = fit_similarity(points, rotation, targets)
    torch.testing.assert_close(fit["scale"], scale, rtol=1e-10, atol=0)
    torch.testing.assert_close(fit["trans2d"], trans, rtol=0, atol=1e-9)


def test_normalize_landmarks_maps_crop_corners_to_unit_square():
    corners = torch.tensor([[0.0, 0.0], [255.0, 0.0], [0.0, 255.0], [255.0, 255.0], [127.5, 127.5]])
    out = normalize_landmarks(corners, 256)
    torch.testing.assert_close(out, torch.tensor([[-1.0, -1.0], [1.0, -1.0], [-1.0, 1.0], [1.0, 1.0], [0.0, 0.0]]))


def test_untrained_solver_control_returns_base_settings():
    names = ["landmarks", "identity_prior", "feature"]
    net = SolverControlNet(names, levels=2, iterations=3, base_damping=0.02)
    costs = {"landmarks": torch.tensor([5.0, 300.0]), "identity_prior": torch.tensor([0.1, 2.0])}
    out = net(costs, level=1, iteration=2, batch=2)
    torch.testing.assert_close(out["damping"], torch.full((2,), 0.02))
    for n in names:
        torch.testing.assert_close(out["weights"][n], torch.ones(2))
    base = {"landmarks": torch.tensor(0.25), "identity_prior": torch.tensor(1.0)}
    state = IterationState(iteration=0, params={}, block_costs=costs, damping=torch.full((2,), 0.5))
    control = net.controller(0, base)(state)
    torch.testing.assert_close(control.damping, torch.full((2,), 0.02))
    torch.testing.assert_close(control.weights["landmarks"], torch.full((2,), 0.25))
    # Trained to extremes, the multipliers stay within exp(+-4).
    with torch.no_grad():
        net.mlp[-1].bias.copy_(torch.tensor([100.0, -100.0, 0.0, 100.0]))
    with torch.no_grad():
        out = net(costs, level=0, iteration=0, batch=2)
    assert float(out["weights"]["landmarks"].max()) <= float(torch.exp(torch.tensor(4.0))) + 1e-3
    assert float(out["weights"]["identity_prior"].min()) >= float(torch.exp(torch.tensor(-4.0))) - 1e-6


def test_untrained_head_starts_neutral_and_weighs_landmarks_by_its_confidence():
    torch.manual_seed(0)
    head = InitHead(feature_dim=6, n_identity=5, n_expression=4, hidden=16)
    pooled, landmarks = torch.randn(2, 3, 6), torch.rand(2, 3, 68, 2) * 2 - 1
    with torch.no_grad():
        out = head(pooled, landmarks)
        torch.testing.assert_close(out["landmark_confidence"], torch.ones(2, 3, 68))
        torch.testing.assert_close(out["identity"], torch.zeros(2, 5))
        torch.testing.assert_close(out["rotation"], torch.zeros(2, 3, 3))
        torch.testing.assert_close(out["identity_weights"], torch.full((2, 3), 1.0 / 3.0))
        # A masked-out image gets no say in the person's identity.
        head.identity.bias.copy_(torch.tensor([0.0, 0, 0, 0, 0, 0]))
        head.identity.weight[:5].normal_()
        masked = head(pooled, landmarks, mask=torch.tensor([[True, True, False], [True, True, True]]))
        changed = pooled.clone()
        changed[0, 2] += 10.0
        masked2 = head(changed, landmarks, mask=torch.tensor([[True, True, False], [True, True, True]]))
    torch.testing.assert_close(masked["identity"][0], masked2["identity"][0])
    assert float(masked["identity_weights"][0, 2]) == 0.0


def _decoder(seed: int) -> NeuralRigDecoder:
    gen = torch.Generator().manual_seed(seed)
    basis = CorrectiveBasis(directions=torch.randn(3, 50, 3, generator=gen), masks=torch.rand(4, 50, generator=gen))
    torch.manual_seed(seed)
    return NeuralRigDecoder(basis, feature_dim=6, n_identity=5, code_dim=4, hidden=16)


def test_untrained_rig_decoder_adds_nothing():
    dec = _decoder(4)
    with torch.no_grad():
        code, correctives = dec(torch.randn(2, 3, 6), torch.randn(2, 5))
    assert code.shape == (2, 4) and correctives.shape == (2, 4, 50, 3)
    assert float(code.abs().max()) > 0 and float(correctives.abs().max()) == 0.0


def test_rig_decoder_fusion_is_order_free_and_masked():
    dec = _decoder(5)
    with torch.no_grad():
        dec.decoder[-1].weight.normal_()
    gen = torch.Generator().manual_seed(6)
    pooled, identity = torch.randn(2, 4, 6, generator=gen), torch.randn(2, 5, generator=gen)
    perm = torch.tensor([2, 0, 3, 1])
    with torch.no_grad():
        code, corr = dec(pooled, identity)
        code_p, corr_p = dec(pooled[:, perm], identity)
    torch.testing.assert_close(code_p, code)
    torch.testing.assert_close(corr_p, corr)
    assert float(corr.abs().max()) > 0
    # Masked-out images change nothing: same as leaving them out.
    mask = torch.tensor([[True, False, True, True], [False, True, False, False]])
    garbage = pooled.clone()
    garbage[~mask] = 1e3
    fused = dec.fuse(garbage, mask)
    torch.testing.assert_close(fused[0], dec.fuse(pooled[:1, [0, 2, 3]])[0])
    torch.testing.assert_close(fused[1], dec.fuse(pooled[1:, [1]])[0])


def _feature_problem(face, channels: int, seed: int = 7):
    """A double-precision sampled-block problem over 20 vertices: smooth maps and parameters."""
    model = face.double()
    subset = VertexSubset(model, torch.arange(0, 9000, 450))
    gen = torch.Generator().manual_seed(seed)
    yy, xx = torch.meshgrid(torch.arange(64.0), torch.arange(64.0), indexing="ij")
    maps = torch.stack([torch.sin(xx / 15 + c) * torch.cos(yy / 17 - c) for c in range(channels)])
    maps = (0.5 + 0.4 * maps).to(torch.float64).expand(1, 2, channels, 64, 64).contiguous()
    params = {"identity": 0.3 * torch.randn(1, model.n_identity, generator=gen, dtype=torch.float64),
              "expression": 0.2 * torch.rand(1, 2, model.n_expression, generator=gen, dtype=torch.float64),
              "rotation": 0.2 * torch.randn(1, 2, 3, generator=gen, dtype=torch.float64),
              "scale": torch.full((1, 2), 1.0, dtype=torch.float64),
              "trans2d": torch.full((1, 2, 2), 128.0, dtype=torch.float64)}
    targets = torch.rand(1, 2, 20, channels, generator=gen, dtype=torch.float64)
    weights = 0.5 + torch.rand(1, 2, 20, generator=gen, dtype=torch.float64)
    return subset, maps, params, targets, weights


def test_sampled_block_with_images_is_the_photometric_block(ict_face):
    subset, maps, params, targets, weights = _feature_problem(ict_face, 3)
    params = {**params, "scale": params["scale"] * 0.25, "trans2d": params["trans2d"] * 0.25}
    a = photometric_block(subset, maps, targets, weights, huber=0.1, blur_sigma=1.0)
    b = sampled_block(subset, maps, targets, weights, huber=0.1, blur_sigma=1.0)
    assert (a.huber, a.per_group, a.depends_on) == (b.huber, b.per_group, b.depends_on)
    ra, ja = a.linearize(params)
    rb, jb = b.linearize(params)
    torch.testing.assert_close(ra, rb, rtol=0, atol=0)
    assert set(ja) == set(jb)
    for n in ja:
        torch.testing.assert_close(ja[n], jb[n], rtol=0, atol=0)
    with pytest.raises(ValueError, match=re.escape("(B, G, 3, H, W)")):
        photometric_block(subset, maps.expand(1, 2, 3, 64, 64)[:, :, :2], targets[..., :2], weights)


def test_sampled_block_reads_the_map_at_scaled_pixels(ict_face):
    """A map whose value is its column index returns ``a * u + b`` exactly (pixel-centre convention)."""
    subset, _, params, _, weights = _feature_problem(ict_face, 1)
    ramp = torch.arange(64.0, dtype=torch.float64).expand(1, 2, 1, 64, 64).contiguous()
    zeros = torch.zeros(1, 2, 20, 1, dtype=torch.float64)
    block = sampled_block(subset, ramp, zeros, weights, uv_scale=0.25, uv_offset=-0.375)
    flat = {"identity": params["identity"].expand(2, -1), "expression": params["expression"][0]}
    uv = weak_perspective_project(subset.points(flat["identity"], flat["expression"]),
                                  euler_to_matrix(params["rotation"][0]), params["scale"][0], params["trans2d"][0])
    expected = (0.25 * uv[..., 0] - 0.375) * weights[0].sqrt()
    torch.testing.assert_close(block.residual(params)[0], expected, rtol=1e-12, atol=1e-9)


def test_sampled_block_jacobian_matches_autodiff_and_finite_differences(ict_face):
    """Closed form (blurred map gradients, as `block_jacobian` returns it) vs reverse-mode autograd
    through bilinear sampling (grid_sample has no forward-mode derivative), C=4, stride-4 map."""
    subset, maps, params, targets, weights = _feature_problem(ict_face, 4)
    block = sampled_block(subset, maps, targets, weights, blur_sigma=0.5, uv_scale=0.25, uv_offset=-0.375)
    r, closed = block_jacobian(block, params, free=list(params), per_group=list(PER_IMAGE))
    torch.testing.assert_close(r, block.residual(params))
    assert r.shape == (1, 2, 4 * 20) and float(r.abs().max()) > 0.05
    assert set(closed) == set(params)
    gen = torch.Generator().manual_seed(8)
    for name, value in params.items():
        full = torch.autograd.functional.jacobian(lambda x, n=name: block.residual({**params, n: x}), value)
        if name == "identity":  # (1, 2, 4M, 1, n_id): residual batch = parameter batch
            auto = full[:, :, :, 0]
        else:  # (1, 2, 4M, 1, 2, ...): each image's residuals depend on its own parameters
            auto = torch.stack([full[:, g, :, 0, g] for g in range(2)], dim=1)
        assert _rel(closed[name], auto) < 0.05, f"{name}: {_rel(closed[name], auto):.3f}"
        # Autograd vs central differences along a random direction.
        d = torch.randn(value.shape, generator=gen, dtype=torch.float64)
        eps = 1e-6
        fd = (block.residual({**params, name: value + eps * d})
              - block.residual({**params, name: value - eps * d})) / (2 * eps)
        lin = (full * d.reshape(1, 1, 1, *d.shape)).flatten(3).sum(-1)
        assert _rel(lin, fd) < 1e-5, f"{name}: {_rel(lin, fd):.2e}"


# ------------------------------------------------------------------ 3. weights files
def test_weights_round_trip(perturbed_net, ict_face, tmp_path):
    images, landmarks = _inputs(perturbed_net, 1, 2, 128, seed=9)
    with torch.no_grad():
        ref = perturbed_net(images, landmarks)
    info = {"command": "python train.py --steps 1", "seed": 3}
    for half, tol in ((True, 1e-2), (False, 1e-6)):
        path = save_network(perturbed_net, tmp_path / f"w_{half}.pth", training=info, half=half)
        net = load_network(path, ict_face)
        assert not net.training and net.config == SMALL and net.training_info == info
        assert all(p.dtype == torch.float32 for p in net.parameters())
        with torch.no_grad():
            out = net(images, landmarks)
        for s in (0, -1):
            for n in ("identity", "expression", "rotation", "scale", "trans2d"):
                err = _rel(out.stages[s][n], ref.stages[s][n])
                assert err < tol, f"half={half} stage {s} {n}: relative error {err:.2e}"
        assert _rel(out.correctives, ref.correctives) < tol and float(ref.correctives.abs().max()) > 0
        assert _rel(out.vertices, ref.vertices) < tol


def test_weights_errors_name_the_file(perturbed_net, ict_model, ict_face, tmp_path):
    missing = tmp_path / "absent.pth"
    with pytest.raises(NetworkWeightsError, match=re.escape(str(missing))):
        load_network(missing, ict_face)
    text = tmp_path / "notes.pth"
    text.write_text("not a weights file\n")
    with pytest.raises(NetworkWeightsError, match=re.escape(str(text)) + ".*not a readable weights file"):
        load_network(text, ict_face)
    other = tmp_path / "other.pth"
    torch.save({"format": "something-else-2", "state_dict": {}}, other)
    with pytest.raises(NetworkWeightsError, match=re.escape(str(other)) + ".*something-else-2"):
        load_network(other, ict_face)
    good = save_network(perturbed_net, tmp_path / "good.pth")
    with pytest.raises(NetworkWeightsError, match=re.escape(str(good)) + ".*face model"):
        load_network(good, ict_model.region("narrow_face"))  # 6,706 vertices, not 9,409
    data = torch.load(good, weights_only=True)
    data["config"]["no_such_setting"] = 1
    bad_config = tmp_path / "bad_config.pth"
    torch.save(data, bad_config)
    with pytest.raises(NetworkWeightsError, match=re.escape(str(bad_config)) + ".*no_such_setting"):
        load_network(bad_config, ict_face)


# ------------------------------------------------------------------ 4. training
def _log(path: Path):
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


@pytest.fixture(scope="module")
def training_run(ict_model, ict_dir, tmp_path_factory):
    """Train 20 regression steps on a fixed 2 x 2 batch, then resume for 6 end-to-end steps."""
    import train
    from models.training.data import build_cache
    from utils.synthetic.generator import SyntheticConfig

    root = tmp_path_factory.mktemp("train")
    cache = build_cache(ict_model, root / "cache.npz", subjects=2, images=2, seed=5, detect=False,
                        synthetic_config=SyntheticConfig(image_size=128, supersample=1))
    common = ["--cache", str(cache), "--out", str(root / "run"), "--model-path", str(ict_dir),
              "--regression-steps", "20", "--persons", "2", "--images", "2", "--lr", "2e-2", "--no-augment",
              "--log-every", "4", "--seed", "3"]
    assert train.main([*common, "--steps", "20", "--export", str(root / "first.pth")]) == 0
    first = _log(root / "run" / "log.csv")
    assert train.main([*common, "--steps", "26", "--resume", "--photometric-weight", "1.0",
                       "--export", str(root / "resumed.pth")]) == 0
    rows = _log(root / "run" / "log.csv")
    return {"first": first, "resumed": rows[len(first):], "weights": root / "resumed.pth",
            "first_weights": root / "first.pth", "log": root / "run" / "log.csv"}


def test_training_lowers_the_loss(training_run):
    rows = training_run["first"]
    assert [int(r["step"]) for r in rows] == [4, 8, 12, 16, 20]
    assert all(r["phase"] == "regression" for r in rows)
    total = [float(r["total"]) for r in rows]
    assert (total[-1] + total[-2]) / 2 < 0.8 * (total[0] + total[1]) / 2, total
    assert float(rows[-1]["vertex_0"]) < float(rows[0]["vertex_0"])


def test_training_resumes_from_the_checkpoint(training_run):
    first, resumed = training_run["first"], training_run["resumed"]
    assert [int(r["step"]) for r in resumed] == [24, 26]
    assert all(r["phase"] == "full" for r in resumed)
    assert all(0.0 < float(r["photometric"]) < 0.2 for r in resumed)  # the photometric term, switched on
    assert all(float(r["vertex_2"]) == float(r["vertex_2"]) for r in resumed)  # solver stages logged
    last = NetworkConfig().iterations
    for r in resumed:  # the solver's cost, logged per level and iteration, goes down within a level
        assert float(r[f"cost_0_{last}"]) < float(r["cost_0_0"]), r
    # Started from the trained weights, not afresh: the regression stage is as good as at the end.
    assert float(resumed[0]["vertex_0"]) < float(first[0]["vertex_0"])


def test_exported_weights_load(training_run, ict_face):
    net = load_network(training_run["weights"], ict_face)
    info = net.training_info
    assert info["seed"] == 3 and info["steps"] == 26
    shipped_log = training_run["weights"].with_name("resumed_log.csv")
    assert info["log"].startswith(shipped_log.name)
    assert shipped_log.read_text() == training_run["log"].read_text()  # the log travels with the weights
    assert net.config.levels == NetworkConfig().levels
    first = load_network(training_run["first_weights"], ict_face)
    assert any(not torch.equal(a, b) for a, b in zip(first.state_dict().values(), net.state_dict().values()))


def test_exported_weights_record_the_training_command(training_run, ict_face):
    command = load_network(training_run["weights"], ict_face).training_info["command"]
    assert "--resume" in command and "--steps 26" in command


def test_photometric_loss_is_lowest_at_the_true_geometry_and_pulls_back_to_it(small_net, ict_model):
    from models.inorig import NetworkOutput
    from models.training.losses import photometric_loss
    from utils.synthetic.generator import SyntheticConfig, SyntheticGenerator

    size = SMALL.image_size
    subj = SyntheticGenerator(ict_model, SyntheticConfig(image_size=size, supersample=1)).subject(3, seed=21)
    images = torch.from_numpy(subj.images).permute(0, 3, 1, 2).float()[None] / 255.0
    identity = torch.from_numpy(subj.identity)[None]
    expression = torch.from_numpy(subj.expression)[None]

    def loss_at(shift: torch.Tensor) -> torch.Tensor:
        params = {"identity": identity, "expression": expression,
                  "rotation": torch.from_numpy(subj.rotation)[None], "scale": torch.from_numpy(subj.scale)[None],
                  "trans2d": torch.from_numpy(subj.trans2d)[None] + shift}
        neutral, vertices = small_net.meshes(identity, expression)
        out = NetworkOutput(params=params, stages=[params], rig_code=torch.zeros(1, 1),
                            correctives=torch.zeros(1), neutral=neutral, vertices=vertices)
        return photometric_loss(small_net, out, images)

    truth = float(loss_at(torch.zeros(2)))
    shift = torch.tensor([3.0, 0.0], requires_grad=True)
    moved = loss_at(shift)
    moved.backward()
    assert truth < 0.02, truth  # render noise and interpolation only
    assert float(moved.detach()) > 1.3 * truth, (truth, float(moved.detach()))
    assert float(shift.grad[0]) > 0  # descending the loss moves the face back towards the truth


# ------------------------------------------------------------------ 5./6. shipped weights
@pytest.fixture(scope="module")
def shipped_net(ict_face) -> INORig:
    if not SHIPPED_WEIGHTS.is_file():
        pytest.skip(f"shipped weights {SHIPPED_WEIGHTS} are absent (train them with train.py --export)")
    return load_network(SHIPPED_WEIGHTS, ict_face)


def test_shipped_weights_load_with_their_provenance(shipped_net, ict_face):
    info = shipped_net.training_info
    assert "train.py" in info["command"] and "--cache" in info["command"]
    assert isinstance(info["seed"], int) and info["log"]
    assert not shipped_net.training and shipped_net.face.n_vertices == ict_face.n_vertices


def test_shipped_solver_converges_on_a_synthetic_subject(shipped_net, ict_model, ict_face):
    from utils.synthetic.generator import SyntheticConfig, SyntheticGenerator
    from utils.synthetic.truth import detector_landmarks

    subject = SyntheticGenerator(ict_model, SyntheticConfig(supersample=1)).subject(4, seed=4321)
    truth = torch.as_tensor(detector_landmarks(ict_face, subject))[None]
    images = torch.as_tensor(subject.images).permute(0, 3, 1, 2).float().div(255.0)[None]
    with torch.no_grad():
        full = shipped_net(images, truth, solve_steps=True)
        regression = shipped_net(images, truth, solve_steps=False)

    def error(out) -> float:
        return float((shipped_net.projected_landmarks(out.params) - truth).norm(dim=-1).mean())

    assert error(full) < 1.5 and error(full) < error(regression), (error(full), error(regression))
    costs = [float(c["landmarks"].sum()) for c in full.block_costs]
    assert len(costs) == shipped_net.config.levels
    assert all(b < a for a, b in zip(costs, costs[1:])), costs
