"""Issue 20: the texture fit's fast paths give what the straightforward computations give.

Texel interpolation without strided reductions, the compiled texel pass (to float rounding) and
weighted median (to the bit), the edge ramp by cv2, masks grown by cv2, the weighted median by
numpy's sort, the diffusion over the free vertices only (to float rounding) and its compiled rounds
(to the bit), the texels no photo may weigh left out, and the atlas caches (texel maps, fill
indices): each compared with the plain way on small data, bit for bit where the arithmetic is the
same.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import ndimage

import core.rig.head as head_module
import core.rig.texture as texture_module
import core.rig.texture_fit as fit_module
from core.mesh import vertex_neighbours
from core.rig.head import whole_head
from core.rig.rig import Rig
from core.rig.texture import fill_empty, texel_map
from core.rig.texture_fit import TextureConfig, estimate_texture, weighted_median

TEXTURE = 128


@pytest.fixture(scope="module")
def head(ict_model, ict_face):
    g = torch.Generator().manual_seed(5)
    rig = Rig.from_model(ict_face, 0.5 * torch.randn(ict_face.n_identity, generator=g))
    return whole_head(rig, ict_model, texture_height=TEXTURE)


def test_at_texels_is_the_summed_products():
    g = torch.Generator().manual_seed(0)
    values = torch.randn(50, 3, generator=g) * 100
    corners = torch.randint(0, 50, (400, 3), generator=g)
    bary = torch.rand(400, 3, generator=g)
    ours = fit_module._at_texels(values, corners.t().contiguous(), bary.t().contiguous())
    assert torch.equal(ours, (values[corners] * bary[..., None]).sum(1))
    ours = fit_module._at_texels(values[:, 0].contiguous(), corners.t().contiguous(), bary.t().contiguous())
    assert torch.equal(ours, (values[:, 0][corners] * bary).sum(1))


def test_edge_ramp_is_scipys():
    g = torch.Generator().manual_seed(1)
    valid = torch.rand(40, 50, generator=g) > 0.2
    valid[5:30, 10:45] = True
    inside = np.pad(valid.numpy(), 1)
    distance = ndimage.distance_transform_edt(inside)[1:-1, 1:-1]
    for pixels in (3.0, 12.0):
        expected = np.clip((distance - 1.0) / pixels, 0.0, 1.0)
        assert np.array_equal(fit_module._edge_ramp(valid, 40, 50, pixels).numpy(), expected)
    assert float(fit_module._edge_ramp(None, 20, 30, 5.0)[3, 15]) == pytest.approx(0.6)  # 4 px from the edge


@pytest.mark.parametrize("pixels", [1, 3])
def test_grow_is_a_max_pool(pixels):
    mask = torch.rand(30, 41, generator=torch.Generator().manual_seed(2)) > 0.9
    k = 2 * pixels + 1
    expected = torch.nn.functional.max_pool2d(mask[None, None].float(), k, 1, pixels)[0, 0] > 0
    assert torch.equal(fit_module._grow(mask, pixels), expected)


def test_weighted_median_is_the_sorted_cumulative_pick():
    g = torch.Generator().manual_seed(4)
    values = torch.rand(9, 300, 3, generator=g).clamp(0.1, 0.9)  # clamped: many ties
    weights = torch.rand(9, 300, generator=g) * (torch.rand(9, 300, generator=g) > 0.3) + 1e-12
    order = torch.sort(values, dim=0, stable=True)
    cumulative = torch.gather(weights[..., None].expand_as(values), 0, order.indices).cumsum(0)
    pick = (cumulative < 0.5 * cumulative[-1:]).sum(0, keepdim=True).clamp(max=8)
    assert torch.equal(weighted_median(values, weights), torch.gather(order.values, 0, pick)[0])


@pytest.mark.skipif(fit_module._TEXELS is None, reason="the compiled texel pass is not built (make install)")
def test_compiled_weighted_median_is_the_torch_one_to_the_bit(monkeypatch):
    """Ties, zero weights, one photo and many: the compiled picks are the sorted torch path's."""
    g = torch.Generator().manual_seed(12)
    cases = []
    for photos, texels in ((1, 20), (2, 50), (16, 2000), (70, 300)):
        values = torch.rand(photos, texels, 3, generator=g)
        values[:, ::5] = values[:1, ::5].clone()  # every photo the same value
        values = (values * 8).round() / 8  # many ties
        kept = torch.rand(photos, texels, generator=g) > 0.4
        weights = torch.rand(photos, texels, generator=g) * kept + 1e-12
        cases.append((values, weights, weighted_median(values, weights)))
    monkeypatch.setattr(fit_module, "_TEXELS", None)
    for values, weights, compiled in cases:
        assert torch.equal(compiled, weighted_median(values, weights))


def test_diffusion_over_the_free_vertices_is_the_full_one(head):
    texels = texel_map(head.uvs, head.uv_triangles, TEXTURE)
    covered = texels.tri_id[0] >= 0
    tri, bary = texels.tri_id[0][covered], texels.bary[0][covered].float()
    g = torch.Generator().manual_seed(6)
    values = torch.rand(len(tri), 3, generator=g)
    weight = torch.rand(len(tri), generator=g) * (torch.rand(len(tri), generator=g) > 0.6)
    ours = fit_module._diffuse(head, tri, bary, values, weight, 0.12, 30)

    triangles, n = head.head_triangles.long(), head.n_head_vertices
    corners = triangles[tri]
    total = torch.zeros(n).index_add_(0, corners.reshape(-1), (bary * weight[:, None]).reshape(-1))
    weighted = (values[:, None, :] * (bary * weight[:, None])[..., None]).reshape(-1, 3)
    acc = torch.zeros(n, 3).index_add_(0, corners.reshape(-1), weighted)
    known = total > 0.12
    colour = torch.where(known[:, None], acc / total.clamp(min=1e-9)[:, None],
                         (acc.sum(0) / total.sum().clamp(min=1e-9)).expand(n, 3))
    neighbours = vertex_neighbours(triangles, n)
    valid = neighbours >= 0
    rows = torch.arange(n)[:, None].expand_as(neighbours)[valid]
    count = valid.sum(1).clamp(min=1).float()
    ring = torch.sparse_coo_tensor(torch.stack([rows, neighbours[valid]]), 1.0 / count[rows], (n, n))
    ring = ring.to_sparse_csr()
    for _ in range(30):
        colour = torch.where(~known[:, None], ring @ colour, colour)
    assert bool((~known).any()) and bool(known.any())
    # The known neighbours' share is summed once, apart from the free ones': float rounding only.
    expected = (colour[corners] * bary[..., None]).sum(1)
    assert torch.allclose(ours, expected, rtol=0, atol=1e-6)


@pytest.mark.skipif(fit_module._DIFFUSION is None, reason="core.rig._diffusion is not built (make setup)")
def test_compiled_diffusion_rounds_are_scipys_products_to_the_bit(monkeypatch):
    from scipy import sparse

    g = np.random.default_rng(8)
    rows = 500
    a = sparse.random(rows, rows, density=0.012, random_state=g, dtype=np.float32, format="lil")
    a[3] = 0  # an empty row
    a = a.tocsr()
    a.data /= 4.0
    b = g.normal(size=(rows, 3)).astype(np.float32)
    x = g.normal(size=(rows, 3)).astype(np.float32)
    arrays = (a.indptr, a.indices, a.data)
    compiled = [fit_module._rounds(arrays, b, x, 50, threads) for threads in (1, 3)]
    expected = x
    for _ in range(50):
        expected = a @ expected + b
    assert all(np.array_equal(c, expected) for c in compiled)
    monkeypatch.setattr(fit_module, "_DIFFUSION", None)
    assert np.array_equal(fit_module._rounds(arrays, b, x, 50, None), expected)  # the fallback
    assert not np.array_equal(expected, x)  # x itself is left as it was, and the rounds moved it
    assert np.array_equal(fit_module._rounds(arrays, b, x, 0, 2), x)


def test_texels_no_photo_weighs_change_nothing(head, monkeypatch):
    """Estimating every texel (the texels below the neck and beyond the face too) gives the same
    weights, to the bit, and the same texture."""
    g = torch.Generator().manual_seed(7)
    images = torch.rand(3, 3, 96, 96, generator=g)
    from core.camera import WeakPerspective

    pose = WeakPerspective(torch.zeros(3, 3), torch.full((3,), 0.35), torch.full((3, 2), 48.0))
    sh = torch.zeros(3, 9, 3)
    sh[:, 0] = 1.0
    expression = 0.2 * torch.rand(3, head.n_expression, generator=g)
    jaw = torch.stack([torch.linspace(-60, 60, 17), torch.full((17,), -50.0)], 1)
    config = TextureConfig(height=TEXTURE, diffusion_iterations=20)
    fast = estimate_texture(head, images, expression, pose, sh, config, jawline=jaw)
    assert float(fast.weight.max()) > 0 and bool((fast.weight[fast.skin] == 0).any())
    monkeypatch.setattr(fit_module, "_weighed", lambda prior: torch.ones(len(prior), dtype=torch.bool))
    full = estimate_texture(head, images, expression, pose, sh, config, jawline=jaw)
    assert torch.equal(fast.weight, full.weight)
    # The shading's matrix product over fewer rows may round otherwise: float rounding only.
    assert torch.allclose(fast.texture, full.texture, rtol=0, atol=1e-6)


def test_photos_on_several_threads_give_the_same_texture(head):
    """The photos read side by side (`core.cpus.parallel_map`) give the texture of one thread, to the bit."""
    g = torch.Generator().manual_seed(9)
    from core.camera import WeakPerspective

    images = torch.rand(4, 3, 96, 96, generator=g)
    pose = WeakPerspective(0.2 * torch.randn(4, 3, generator=g), torch.full((4,), 0.35), torch.full((4, 2), 48.0))
    sh = torch.zeros(4, 9, 3)
    sh[:, 0] = 1.0
    expression = 0.2 * torch.rand(4, head.n_expression, generator=g)
    config = TextureConfig(height=TEXTURE, diffusion_iterations=20)
    one = estimate_texture(head, images, expression, pose, sh, config, threads=1)
    three = estimate_texture(head, images, expression, pose, sh, config, threads=3)
    assert float(one.weight.max()) > 0
    assert torch.equal(one.weight, three.weight) and torch.equal(one.texture, three.texture)


@pytest.mark.skipif(fit_module._TEXELS is None, reason="the compiled texel pass is not built (make install)")
def test_compiled_texel_pass_is_the_torch_composition(ict_model, ict_face, monkeypatch):
    """Each photo's estimates from the compiled pass (`core.rig._texels`) and from the torch
    composition: the same visibility to the bit (texels weighed or not, across a turned head, a
    crop's padding and lighting from the side), values and weights to float rounding."""
    from core.camera import WeakPerspective

    g = torch.Generator().manual_seed(11)
    face = ict_face.to(dtype=torch.float32)
    head = whole_head(Rig.from_model(face, 0.5 * torch.randn(face.n_identity, generator=g)),
                      ict_model.to(dtype=torch.float32), texture_height=TEXTURE)
    images = torch.rand(4, 3, 96, 112, generator=g)
    rotation = torch.tensor([[0.1, 0.5, 0.0], [-0.2, -0.4, 0.1], [0.0, 0.0, 0.3], [0.3, 0.9, 0.0]])
    pose = WeakPerspective(rotation, torch.full((4,), 0.4), torch.tensor([[56.0, 48.0], [50.0, 40.0],
                                                                          [60.0, 52.0], [20.0, 48.0]]))
    sh = 0.3 * torch.randn(4, 9, 3, generator=g)
    sh[:, 0] = 1.0
    expression = 0.3 * torch.rand(4, head.n_expression, generator=g)
    valid = torch.ones(4, 96, 112, dtype=torch.bool)
    valid[1, :, :20] = False
    config = TextureConfig(height=TEXTURE)
    texels = texel_map(head.uvs, head.uv_triangles, TEXTURE)
    skin = (texels.tri_id[0] >= 0) & fit_module.skin_triangles(head)[texels.tri_id[0].clamp(min=0)]
    tri, bary = texels.tri_id[0][skin], texels.bary[0][skin].to(torch.float32)
    args = (head, images, expression, pose, sh, tri, bary, config, None, valid)
    compiled_values, compiled_weights, active = fit_module._photo_estimates(*args)
    monkeypatch.setattr(fit_module, "_TEXELS", None)
    values, weights, same_active = fit_module._photo_estimates(*args)
    assert torch.equal(active, same_active)
    seen = weights > 0
    assert torch.equal(compiled_weights > 0, seen) and 0.05 < float(seen.float().mean()) < 0.9
    assert torch.allclose(compiled_weights, weights, rtol=1e-5, atol=1e-6)
    assert torch.allclose(compiled_values[seen], values[seen], rtol=1e-4, atol=1e-5)
    # The head near photo 3's edge (its box partly outside the photo): fewer texels weighed there.
    assert float(compiled_weights[3].sum()) < float(compiled_weights[0].sum())


def test_atlas_caches_give_the_uncached_results(head):
    texture_module._TEXEL_MAPS.clear()
    texture_module._NEAREST.clear()
    first = texel_map(head.uvs, head.uv_triangles, TEXTURE)
    again = texel_map(head.uvs.clone(), head.uv_triangles.clone(), TEXTURE)
    assert len(texture_module._TEXEL_MAPS) == 1
    for a, b in zip(first, again):
        assert torch.equal(a, b) and a.data_ptr() != b.data_ptr()  # each call its own copy
    first.tri_id.fill_(-1)  # a caller's change does not reach the cache
    assert torch.equal(texel_map(head.uvs, head.uv_triangles, TEXTURE).tri_id, again.tri_id)

    filled = (again.tri_id[0] >= 0).numpy()
    image = np.random.default_rng(0).random((*filled.shape, 3))
    _, (rows, cols) = ndimage.distance_transform_edt(~filled, return_indices=True)
    assert np.array_equal(fill_empty(image, filled), image[rows, cols])
    assert np.array_equal(fill_empty(image, filled), image[rows, cols])  # from the cache
    assert len(texture_module._NEAREST) == 1


def test_split_seams_pairs_are_the_row_unique():
    from utils.export.outputs import split_seams

    rng = np.random.default_rng(8)
    triangles = rng.integers(0, 30, (60, 3))
    uv_triangles = rng.integers(0, 45, (60, 3))
    source, out_triangles, uv_ids = split_seams(triangles, uv_triangles, 30)
    pairs, inverse = np.unique(np.stack([triangles.reshape(-1), uv_triangles.reshape(-1)], 1), axis=0,
                               return_inverse=True)
    # Each corner's output vertex is its (vertex, uv) pair's; the pairs are numbered as np.unique rows.
    assert np.array_equal(source[out_triangles.reshape(-1)], triangles.reshape(-1))
    assert np.array_equal(uv_ids[out_triangles.reshape(-1)], uv_triangles.reshape(-1))
    corner_of_pair = np.zeros(len(pairs), np.int64)
    corner_of_pair[inverse.reshape(-1)] = out_triangles.reshape(-1)
    assert len(np.unique(corner_of_pair)) == len(pairs) == len(source)
    extra = corner_of_pair[corner_of_pair >= 30]
    assert np.array_equal(extra, np.sort(extra))  # copies in the order of their pairs


def test_atlas_uv_pairs_are_the_row_unique():
    from core.rig.texture import atlas_uvs

    g = torch.Generator().manual_seed(9)
    model_uvs = torch.rand(40, 2, generator=g) + torch.randint(0, 4, (40, 1), generator=g).float() * \
        torch.tensor([1.0, 0.0])
    model_uvs[:, 0] = model_uvs[:, 0].clamp(max=3.99)
    corner_ids = torch.randint(0, 40, (70, 3), generator=g)
    corner_ids = corner_ids[(torch.floor(model_uvs[corner_ids, 0]).long() == torch.floor(
        model_uvs[corner_ids[:, :1], 0]).long()).all(1)]  # one tile per triangle
    eyeball = torch.rand(len(corner_ids), generator=g) > 0.7
    uvs, uv_triangles = atlas_uvs(model_uvs, corner_ids, eyeball)
    tile = torch.floor(model_uvs[corner_ids][..., 0].mean(1)).long()
    code = torch.where(eyeball, torch.full_like(tile, -1), tile)
    pairs = torch.stack([corner_ids, code[:, None].expand(-1, 3)], -1).reshape(-1, 2)
    unique, inverse = torch.unique(pairs, dim=0, return_inverse=True)
    assert torch.equal(uv_triangles, inverse.reshape(-1, 3))
    assert len(uvs) == len(unique)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_carry_is_the_summed_gather(dtype):
    rng = np.random.default_rng(10)
    index, weight = rng.integers(0, 200, (300, 8)), rng.random((300, 8))
    values = torch.randn(5, 200, 3, generator=torch.Generator().manual_seed(10), dtype=dtype)
    w = torch.as_tensor(weight, dtype=dtype)
    for v in (values, values[0]):
        expected = (v[..., torch.as_tensor(index), :] * w[..., None]).sum(-2)
        assert torch.equal(head_module._carry(v, index, weight), expected)
    assert torch.equal(head_module._carry(values, index[:, :5], weight[:, :5]),
                       (values[..., torch.as_tensor(index[:, :5]), :]
                        * torch.as_tensor(weight[:, :5], dtype=dtype)[..., None]).sum(-2))
