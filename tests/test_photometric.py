"""Photometric term: albedo / lighting recovery, closed-form Jacobians vs autodiff and finite differences."""
from __future__ import annotations

import torch

from core.camera import WeakPerspective
from core.face_model.model import VertexSubset
from core.fitting.photometric import (estimate_albedo, estimate_appearance, image_gradients, observe,
                                      photometric_block)
from core.lighting import sh_shading, shade
from core.mesh import vertex_normals


def _sphere(n: int = 24):
    """A UV sphere of radius 50 mm (outward CCW triangles)."""
    th = torch.linspace(0.15, torch.pi - 0.15, n, dtype=torch.float64)
    ph = torch.linspace(0, 2 * torch.pi, 2 * n + 1, dtype=torch.float64)[:-1]
    t, p = torch.meshgrid(th, ph, indexing="ij")
    v = 50 * torch.stack([torch.sin(t) * torch.sin(p), torch.cos(t), torch.sin(t) * torch.cos(p)], -1).reshape(-1, 3)
    w = 2 * n
    tris = []
    for i in range(n - 1):
        for j in range(w):
            a, b, c, d = i * w + j, i * w + (j + 1) % w, (i + 1) * w + j, (i + 1) * w + (j + 1) % w
            tris += [[a, c, b], [b, c, d]]
    return v, torch.tensor(tris)


def test_albedo_recovered_from_known_shading():
    g = torch.Generator().manual_seed(0)
    v, t = _sphere()
    normals = vertex_normals(v[None], t).expand(3, -1, -1)
    sh = torch.zeros(3, 9, 3, dtype=torch.float64)
    sh[:, 0] = 0.9
    sh[:, 1:4] = 0.3 * torch.randn(3, 3, 3, generator=g, dtype=torch.float64)
    albedo = 0.3 + 0.5 * torch.rand(v.shape[0], 3, generator=g, dtype=torch.float64)
    shading = sh_shading(normals, sh)
    colors = albedo * shading
    weights = (shading.min(-1).values > 0.05).to(torch.float64)
    est = estimate_albedo(colors, shading, weights, torch.tensor([0.6, 0.45, 0.38]), prior_weight=1e-9,
                          smooth_iterations=0)
    seen = weights.sum(0) > 0
    torch.testing.assert_close(est[seen], albedo[seen], atol=1e-6, rtol=1e-6)


def test_appearance_alternation_explains_the_colours():
    g = torch.Generator().manual_seed(1)
    v, t = _sphere()
    normals = vertex_normals(v[None], t).expand(4, -1, -1).clone()
    sh = torch.zeros(4, 9, 3, dtype=torch.float64)
    sh[:, 0] = 0.8 + 0.2 * torch.rand(4, 1, generator=g, dtype=torch.float64)
    sh[:, 1:4] = 0.25 * torch.randn(4, 3, 1, generator=g, dtype=torch.float64)
    albedo = torch.tensor([0.62, 0.45, 0.38], dtype=torch.float64) * (0.9 + 0.2 * torch.rand(v.shape[0], 1, generator=g, dtype=torch.float64))
    colors = shade(albedo.expand(4, -1, -1), normals, sh)
    from core.fitting.photometric import Observation

    obs = Observation(colors=colors, weights=torch.ones(4, v.shape[0], dtype=torch.float64), normals=normals,
                      screen=torch.zeros(4, v.shape[0], 3, dtype=torch.float64))
    est_albedo, est_sh = estimate_appearance(obs, torch.tensor([0.62, 0.45, 0.38]), iterations=6)
    recon = shade(est_albedo.expand(4, -1, -1), normals, est_sh)
    assert float((recon - colors).abs().mean()) < 0.01 * float(colors.mean())


def test_observe_samples_the_image_and_hides_the_back():
    v, t = _sphere()
    image = torch.zeros(1, 3, 128, 128, dtype=torch.float64)
    image[:, 0] = torch.linspace(0, 1, 128, dtype=torch.float64)[None, :]  # red ramps along u
    rot = torch.zeros(1, 3, dtype=torch.float64)
    pose = WeakPerspective(rot, torch.tensor([1.0], dtype=torch.float64), torch.tensor([[64.0, 64.0]], dtype=torch.float64))
    obs = observe(image, v[None], t, pose)
    front = v[:, 2] > 20
    back = v[:, 2] < -5
    assert bool((obs.weights[0, back] == 0).all()) and float(obs.weights[0, front].mean()) > 0.9
    u = obs.screen[0, front, 0]
    torch.testing.assert_close(obs.colors[0, front, 0], u / 127, atol=1e-6, rtol=0)
    # A subset observed on a coarse z-buffer (the tracker's lighting): the same verdict on the
    # clear cases, colours sampled at the same places.
    ids = torch.cat([torch.nonzero(front)[:, 0], torch.nonzero(back)[:, 0]])
    coarse = observe(image, v[None], t, pose, subset=ids, raster_size=32)
    n_front = int(front.sum())
    assert bool((coarse.weights[0, n_front:] == 0).all()) and float(coarse.weights[0, :n_front].mean()) > 0.9
    torch.testing.assert_close(coarse.colors[0], obs.colors[0, ids])


def test_photometric_jacobians_match_autograd(ict_face):
    """Closed form (image-gradient chain) vs reverse-mode autograd of the residual itself.

    The closed form uses central differences of the blurred image, autograd the exact derivative
    of bilinear interpolation: on a smooth image they agree to a few percent.
    """
    model = ict_face.double()
    ids = torch.arange(0, 9000, 450)
    subset = VertexSubset(model, ids)
    g = torch.Generator().manual_seed(2)
    yy, xx = torch.meshgrid(torch.arange(64.0), torch.arange(64.0), indexing="ij")
    smooth = torch.stack([torch.sin(xx / 9 + c) * torch.cos(yy / 11 - c) for c in (0.0, 1.0, 2.0)])
    images = (0.5 + 0.4 * smooth).to(torch.float64).expand(1, 2, 3, 64, 64).contiguous()
    params = {
        "identity": 0.3 * torch.randn(1, model.n_identity, generator=g, dtype=torch.float64),
        "expression": 0.2 * torch.rand(1, 2, model.n_expression, generator=g, dtype=torch.float64),
        "rotation": 0.2 * torch.randn(1, 2, 3, generator=g, dtype=torch.float64),
        "scale": torch.full((1, 2), 0.25, dtype=torch.float64),
        "trans2d": torch.full((1, 2, 2), 32.0, dtype=torch.float64),
    }
    targets = torch.rand(1, 2, len(ids), 3, generator=g, dtype=torch.float64)
    weights = 0.5 + torch.rand(1, 2, len(ids), generator=g, dtype=torch.float64)
    block = photometric_block(subset, images, targets, weights, huber=None)
    r, closed = block.linearize(params)
    torch.testing.assert_close(r, block.residual(params))
    for name, value in params.items():
        def f(x, name=name):
            return block.residual({**params, name: x})
        auto = torch.autograd.functional.jacobian(f, value)  # (1, 2, 3M, *value.shape)
        if name == "identity":
            auto = auto[:, :, :, 0]  # residual batch = parameter batch
        else:
            auto = torch.stack([auto[:, gi, :, 0, gi] for gi in range(2)], dim=1)
        err = (closed[name] - auto).norm() / auto.norm()
        assert float(err) < 0.05, f"{name}: relative error {float(err):.3f}"


def test_image_gradients_of_a_ramp():
    u = torch.arange(32, dtype=torch.float64)
    img = (2.0 * u[None, None, None, :] + 0.5 * u[None, None, :, None]).expand(1, 1, 32, 32)
    _, grad = image_gradients(img, blur_sigma=1.0)
    torch.testing.assert_close(grad[0, 0, 0, 8:24, 8:24], torch.full((16, 16), 2.0, dtype=torch.float64))
    torch.testing.assert_close(grad[0, 0, 1, 8:24, 8:24], torch.full((16, 16), 0.5, dtype=torch.float64))
