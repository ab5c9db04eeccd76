"""The face from shading: the truth is nearly a fixed point, shading moves a landmark-only face and
wrong head poses towards the truth, and the robust colour cost is bounded."""
from __future__ import annotations

import dataclasses

import pytest
import torch

from core.camera import WeakPerspective, euler_to_matrix
from core.fitting.colour_term import compiled_available
from core.fitting.landmark_geometry import LandmarkGeometry, project_landmarks, update_contour
from core.fitting.photometric import estimate_albedo, estimate_appearance, observe
from core.fitting.shading_cost import shading_cost
from core.fitting.shading_refine import ObservedPatch, ShadingConfig, eye_region_mask, refine_from_shading
from core.lighting import sh_shading
from core.mesh import vertex_normals
from core.metrics import aligned_mesh_error, rotation_error_deg
from core.robust import geman_mcclure
from core.sampling import sample_points
from utils.synthetic.generator import SyntheticGenerator
from utils.synthetic.truth import subject_params

NOISE_PX = 1.5
needs_kernel = pytest.mark.skipif(not compiled_available(), reason="core.fitting._shading is not built (make setup)")


@pytest.fixture(scope="module")
def subject(ict_model):
    return SyntheticGenerator(ict_model).subject(6, seed=1003)


def _inputs(subject, face, identity):
    """Per-image parameters (true pose and expression, ``identity`` (n_id,)), crops, geometry, contour."""
    truth = subject_params(subject)
    params = dict(truth, identity=identity[None].expand(len(subject.images), -1))
    images = torch.from_numpy(subject.images).permute(0, 3, 1, 2).float() / 255.0
    geometry = LandmarkGeometry(face)
    points = geometry.points(truth["identity"], truth["expression"])
    corr = update_contour(geometry, points, euler_to_matrix(truth["rotation"]))
    landmarks = project_landmarks(geometry, truth, correspondence=corr)
    return params, images, geometry, corr, landmarks


def _refine(face, params, images, geometry, corr, landmarks, config=ShadingConfig(), landmark_sigma=NOISE_PX,
            landmark_huber=4.0):
    return refine_from_shading(
        face, images, params, geometry, corr, landmarks, prior_albedo=torch.tensor([0.62, 0.45, 0.38]),
        mask=torch.ones(face.n_vertices), landmark_sigma=landmark_sigma, landmark_huber=landmark_huber,
        identity_weight=1.0, expression_weight=5.0, bounds=(0.0, 1.0), config=config)


def _neutral_error(face, identity, subject) -> float:
    return float(aligned_mesh_error(face.vertices(identity[None]), torch.from_numpy(subject.neutral).float()[None]))


def test_eye_region_mask(ict_face):
    mask = eye_region_mask(ict_face, 6.0)
    eyes = ict_face.landmark_indices[36:48]
    assert mask.shape == (ict_face.n_vertices,) and bool((mask[eyes] == 0).all())
    near = torch.cdist(ict_face.neutral, ict_face.neutral[eyes]).min(1).values
    assert bool((mask == (near > 6.0).float()).all())
    assert 0.02 < 1.0 - float(mask.mean()) < 0.2  # the eye surroundings, not most of the face
    assert bool((eye_region_mask(ict_face, 0.0) == 1).all())


def test_truth_is_nearly_a_fixed_point(subject, ict_face):
    truth = torch.from_numpy(subject.identity).float()
    params, images, geometry, corr, landmarks = _inputs(subject, ict_face, truth)
    config = ShadingConfig(rounds=1, iterations=30)
    identity, sh, per_image = _refine(ict_face, params, images, geometry, corr, landmarks, config)
    assert sh.shape == (6, 9, 3)
    assert per_image["expression"].shape == (6, ict_face.n_expression)
    assert float(per_image["expression"].min()) >= 0.0 and float(per_image["expression"].max()) <= 1.0
    turn = (per_image["rotation"] - params["rotation"]).abs().max()
    assert float(turn) < 0.01  # radians: the true poses stay
    baseline = float(aligned_mesh_error(ict_face.neutral[None], torch.from_numpy(subject.neutral).float()[None]))
    # Starting at the truth with exact landmarks, the refinement stays within a small fraction
    # of the mean face's error (the identity prior and the renderer's pixel noise pull a little).
    assert _neutral_error(ict_face, identity, subject) < 0.15 * baseline


def test_shading_moves_a_landmark_fit_towards_the_truth(subject, ict_face):
    """True poses, expressions; identity from noisy landmarks alone, then refined by shading."""
    n_id = ict_face.n_identity
    params, images, geometry, corr, landmarks = _inputs(subject, ict_face, torch.zeros(n_id))
    noisy = landmarks + NOISE_PX * torch.randn(landmarks.shape, generator=torch.Generator().manual_seed(0))
    # Landmark-only identity: the shading term switched off (weight 0).
    off = dataclasses.replace(ShadingConfig(), weight=0.0, rounds=1, iterations=100, per_image=False)
    start, _, _ = _refine(ict_face, params, images, geometry, corr, noisy, off)
    before = _neutral_error(ict_face, start, subject)
    refined, _, _ = _refine(ict_face, dict(params, identity=start[None].expand(6, -1)), images, geometry, corr, noisy)
    after = _neutral_error(ict_face, refined, subject)
    assert after < 0.85 * before, f"neutral error {before:.2f} mm -> {after:.2f} mm"


def test_colours_alone_move_shifted_faces_back(subject, ict_face):
    """True face, poses and expressions, each image's face shifted 2 px and turned ~3 degrees off;
    with the landmarks' weight negligible, the colours alone bring the poses most of the way back
    (smooth skin pins the turn better than the shift)."""
    truth = torch.from_numpy(subject.identity).float()
    params, images, geometry, corr, landmarks = _inputs(subject, ict_face, truth)
    signs = torch.tensor([[1.0, -1.0, 1.0], [-1.0, 1.0, 1.0], [1.0, 1.0, -1.0]]).repeat(2, 1)
    off = dict(params, rotation=params["rotation"] + torch.deg2rad(torch.tensor(3.0)) / 3 ** 0.5 * signs,
               trans2d=params["trans2d"] + 2.0 * signs[:, :2])
    assert 2.5 < float(rotation_error_deg(off["rotation"], params["rotation"]).min())
    _, _, moved = _refine(ict_face, off, images, geometry, corr, landmarks, ShadingConfig(rounds=2),
                          landmark_sigma=1e3, landmark_huber=None)
    turn = rotation_error_deg(moved["rotation"], params["rotation"])
    shift = (moved["trans2d"] - params["trans2d"]).norm(dim=-1)
    start_shift = 2.0 * 2 ** 0.5
    assert float(turn.mean()) < 0.5 * 3.0 and float(shift.mean()) < 0.75 * start_shift, (turn, shift)


@pytest.mark.parametrize("carry", [True, False])
def test_each_round_starts_with_the_last_rounds_curvature(subject, ict_face, monkeypatch, carry):
    """Round 2's L-BFGS starts from round 1's curvature pairs (the same unknowns, a little changed
    problem), unless ``carry_memory`` is off."""
    import core.fitting.shading_refine as module

    seen = []
    real = module.minimize_lbfgs

    def recorded(objective, x0, **kwargs):
        found = real(objective, x0, **kwargs)
        seen.append((kwargs.get("memory"), found.memory))
        return found

    monkeypatch.setattr(module, "minimize_lbfgs", recorded)
    truth = torch.from_numpy(subject.identity).float()
    params, images, geometry, corr, landmarks = _inputs(subject, ict_face, truth)
    _refine(ict_face, params, images, geometry, corr, landmarks,
            ShadingConfig(rounds=2, iterations=5, carry_memory=carry))
    (given_1, kept_1), (given_2, _) = seen
    assert given_1 is None and len(kept_1[0]) > 0
    assert given_2 is kept_1 if carry else given_2 is None


def test_geman_mcclure_known_values():
    r = torch.tensor([0.0, 0.001, 0.02, 1.0, -1.0, 100.0])
    rho = geman_mcclure(r, 0.02)
    assert rho[0] == 0 and float(rho[1]) == pytest.approx(0.001 ** 2, rel=0.01)  # quadratic near zero
    assert float(rho[2]) == pytest.approx(0.02 ** 2 / 2)  # half the bound at |r| = sigma
    assert float(rho[3]) == float(rho[4]) and float(rho[5]) < 0.02 ** 2  # even, bounded by sigma^2
    pull = torch.autograd.functional.jacobian(lambda x: geman_mcclure(x, 0.02).sum(), torch.tensor([0.02, 0.2, 2.0]))
    assert float(pull[0]) > 10 * float(pull[1]) > 10 * float(pull[2]) > 0  # far outliers stop pulling


def test_shading_cost_is_the_composed_colour_term():
    """`shading_cost` = SH shading -> closed-form albedo -> Geman-McClure, value and gradient."""
    g = torch.Generator().manual_seed(0)
    normals = torch.nn.functional.normalize(torch.randn(4, 40, 3, generator=g, dtype=torch.float64)
                                            + torch.tensor([0.0, 0.0, 2.0], dtype=torch.float64), dim=-1)
    observed = 0.8 * torch.rand(4, 40, 3, generator=g, dtype=torch.float64)
    weights = torch.rand(4, 40, generator=g, dtype=torch.float64)
    weights[0, :5] = 0.0
    sh = 0.3 * torch.randn(4, 9, 3, generator=g, dtype=torch.float64)
    sh[:, 0] += 1.0
    priors = (torch.tensor([0.6, 0.45, 0.4], dtype=torch.float64), torch.rand(40, 3, generator=g, dtype=torch.float64))
    for prior in priors:
        def composed(n, o):
            shading = sh_shading(n, sh)
            albedo = estimate_albedo(o, shading, weights, prior, prior_weight=0.3)
            return (weights[..., None] * geman_mcclure(o - albedo * shading, 0.05)).sum()

        n, o = normals.clone().requires_grad_(True), observed.clone().requires_grad_(True)
        ours, ref = shading_cost(n, o, weights, sh, prior, 0.3, 0.05), composed(n, o)
        assert float(ours.detach()) == pytest.approx(float(ref.detach()), rel=1e-12)
        for a, b in zip(torch.autograd.grad(ours, [n, o]), torch.autograd.grad(ref, [n, o])):
            assert torch.allclose(a, b, atol=1e-14)
        assert torch.autograd.gradcheck(lambda a, b: shading_cost(a, b, weights, sh, prior, 0.3, 0.05), (n, o))


@pytest.mark.parametrize("compiled", [False, pytest.param(True, marks=needs_kernel)])
def test_observed_patch_reads_only_what_the_colour_term_needs(subject, ict_face, compiled):
    """The colour term over the round's observed vertices (their normals from their incident triangles
    only) equals the same term over the whole mesh, value and gradient: by the composed torch
    functions and by the compiled pass. The whole-mesh reference is computed as precisely as the
    path it checks sums: in float32 for the torch functions, in float64 for the compiled pass, whose
    sums are float64 (a rotation's gradient there is a sum of large terms that float32 sums leave
    0.3 % off on some CPUs, the same in both float32 paths)."""
    truth = torch.from_numpy(subject.identity).float()
    params, images, _, _, _ = _inputs(subject, ict_face, truth)
    per_image = {k: params[k].clone() for k in ("expression", "rotation", "scale", "trans2d")}
    vertices = ict_face.vertices(truth[None].expand(6, -1), per_image["expression"])
    pose = WeakPerspective.from_params(per_image)
    seen = observe(images, vertices, ict_face.triangles, pose, grazing=(0.3, 0.6))
    weights = seen.weights * eye_region_mask(ict_face, 14.0)
    prior = torch.tensor([0.62, 0.45, 0.38])
    _, sh = estimate_appearance(dataclasses.replace(seen, weights=weights), prior, prior_weight=0.01)
    patch = ObservedPatch(ict_face, weights, prior, 0.01)
    assert 0.3 < len(patch.weights[0]) / ict_face.n_vertices < 0.9  # a real saving, not everything

    code = truth + 0.1 * torch.randn(truth.shape, generator=torch.Generator().manual_seed(1))
    code.requires_grad_(True)
    rotation = per_image["rotation"].clone().requires_grad_(True)
    current = dict(per_image, rotation=rotation)
    ours = patch.cost(images, code, current, sh, 0.02, compiled=compiled)
    dtype = torch.float64 if compiled else torch.float32
    face, at = ict_face.to(dtype=dtype), {k: v.to(dtype) for k, v in current.items()}
    meshes = face.vertices(code.to(dtype)[None].expand(6, -1), at["expression"])
    full_pose = WeakPerspective.from_params(at)
    colours = sample_points(images.to(dtype), full_pose.project(meshes))
    shading = sh_shading(vertex_normals(full_pose.camera_points(meshes), face.triangles), sh.to(dtype))
    w = weights.to(dtype)
    albedo = estimate_albedo(colours, shading, w, prior.to(dtype), prior_weight=0.01)
    ref = (w[..., None] * geman_mcclure(colours - albedo * shading, 0.02)).sum()
    assert float(ours.detach()) == pytest.approx(float(ref.detach()), rel=1e-5)
    for a, b in zip(torch.autograd.grad(ours, [code, rotation]), torch.autograd.grad(ref, [code, rotation])):
        assert torch.allclose(a, b, rtol=1e-3, atol=1e-4 * float(b.abs().max()))
    # The rotation matrices a caller already has (the objective shares them with the landmark term).
    given = patch.cost(images, code, current, sh, 0.02, compiled=compiled, rotation=euler_to_matrix(rotation))
    assert torch.equal(given.detach(), ours.detach())


@needs_kernel
def test_the_objective_by_hand_is_autograds(subject, ict_face, monkeypatch):
    """Each round's loss and gradient chained by hand through the compiled pass, the landmark term,
    the priors and the expression bounds equal autograd's through the composed functions."""
    import core.fitting.shading_refine as module

    captured = []

    def first_round(objective, x0, **kwargs):
        captured.append(objective.__self__)
        raise StopIteration

    monkeypatch.setattr(module, "minimize_lbfgs", first_round)
    truth = torch.from_numpy(subject.identity).float()
    params, images, geometry, corr, landmarks = _inputs(subject, ict_face, 0.5 * truth)
    with pytest.raises(StopIteration):
        _refine(ict_face, params, images, geometry, corr, landmarks, landmark_huber=2.0)
    (terms,) = captured
    g = torch.Generator().manual_seed(5)
    # The start (expressions at their bounds: no gradient through the clamp there), then offsets; the
    # largest drives expressions past their bounds and landmarks past Huber's knee.
    for spread in (0.0, 0.3, 3.0):
        x = spread * torch.randn(terms.unknowns.start.shape, generator=g)
        loss, grad = terms.by_hand(x)
        ref_loss, ref_grad = terms.autograd(x)
        assert loss == pytest.approx(ref_loss, rel=1e-6)
        sizes = terms.unknowns.sizes
        for ours, ref in zip(torch.split(grad, sizes), torch.split(ref_grad, sizes)):
            assert torch.allclose(ours, ref, rtol=1e-4, atol=1e-5 * float(ref.abs().max()))
    raw = terms.unknowns.fixed["expression"] + terms.unknowns.units["expression"] * torch.split(
        x, terms.unknowns.sizes)[1].view_as(terms.unknowns.fixed["expression"])
    assert bool(((raw < 0) | (raw > 1)).any()) and bool(((raw > 0) & (raw < 1)).any())  # both sides of bounds
