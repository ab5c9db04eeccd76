"""Bilinear sampling at pixel coordinates: exact values on known images, borders, gradients."""

import pytest
import torch

from core.sampling import sample_points


def test_integer_positions_return_pixels_column_row_order():
    image = torch.arange(2 * 3 * 4 * 5, dtype=torch.float32).reshape(2, 3, 4, 5)
    uv = torch.tensor([[[0.0, 0.0], [4.0, 0.0], [2.0, 3.0]]]).expand(2, -1, -1)
    out = sample_points(image, uv)
    assert out.shape == (2, 3, 3)
    for b in range(2):
        torch.testing.assert_close(out[b, 0], image[b, :, 0, 0])
        torch.testing.assert_close(out[b, 1], image[b, :, 0, 4])  # u = column
        torch.testing.assert_close(out[b, 2], image[b, :, 3, 2])  # v = row


def test_linear_image_is_reproduced_exactly_between_pixels():
    height, width = 7, 9
    rows, cols = torch.meshgrid(torch.arange(height, dtype=torch.float64),
                                torch.arange(width, dtype=torch.float64), indexing="ij")
    image = torch.stack([3.0 * cols - 2.0 * rows + 1.0, cols * 0.5])[None]
    gen = torch.Generator().manual_seed(0)
    uv = torch.rand(1, 50, 2, generator=gen, dtype=torch.float64) * \
        torch.tensor([width - 1, height - 1], dtype=torch.float64)
    out = sample_points(image, uv)
    torch.testing.assert_close(out[0, :, 0], 3.0 * uv[0, :, 0] - 2.0 * uv[0, :, 1] + 1.0)
    torch.testing.assert_close(out[0, :, 1], 0.5 * uv[0, :, 0])


def test_bilinear_weights_and_outside_is_zero():
    image = torch.tensor([[[[0.0, 1.0], [2.0, 4.0]]]])
    out = sample_points(image, torch.tensor([[[0.5, 0.5], [0.25, 1.0], [-1.5, 0.0]]]))
    torch.testing.assert_close(out[0, :, 0], torch.tensor([1.75, 2.5, 0.0]))
    border = sample_points(image, torch.tensor([[[-1.5, 0.0]]]), padding_mode="border")
    torch.testing.assert_close(border[0, 0], torch.tensor([0.0]))


def test_gradcheck_image_and_positions():
    gen = torch.Generator().manual_seed(1)
    image = torch.rand(2, 3, 6, 8, generator=gen, dtype=torch.float64, requires_grad=True)
    # Keep away from integer coordinates, where bilinear interpolation has kinks.
    uv = (torch.randint(0, 6, (2, 5, 2), generator=gen).double() + 0.2 +
          0.6 * torch.rand(2, 5, 2, generator=gen, dtype=torch.float64)).requires_grad_()
    assert torch.autograd.gradcheck(sample_points, (image, uv))


def test_shape_errors():
    with pytest.raises(ValueError, match=r"uv: expected shape \(\*, \*, 2\), got \(1, 5\)"):
        sample_points(torch.zeros(1, 3, 4, 4), torch.zeros(1, 5))
    with pytest.raises(ValueError, match="uv: expected batch size 2, got 1"):
        sample_points(torch.zeros(2, 3, 4, 4), torch.zeros(1, 5, 2))
