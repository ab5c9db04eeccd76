"""Image folders: formats, EXIF orientation, sorting, and clear per-file errors."""

import numpy as np
import pytest
from PIL import Image

from utils.io.images import ImageReadError, iter_image_folder, list_images, read_image


def _blocks() -> np.ndarray:
    """40x60 image: red top-left quadrant, blue elsewhere (survives JPEG compression)."""
    image = np.zeros((40, 60, 3), np.uint8)
    image[...] = (0, 0, 255)
    image[:20, :30] = (255, 0, 0)
    return image


@pytest.mark.parametrize("suffix", [".jpg", ".png", ".bmp", ".webp", ".JPEG"])
def test_formats_read_as_rgb(tmp_path, suffix):
    path = tmp_path / f"face{suffix}"
    Image.fromarray(_blocks()).save(path, quality=95)
    image = read_image(path)
    assert image.shape == (40, 60, 3) and image.dtype == np.uint8
    np.testing.assert_allclose(image[5, 5], (255, 0, 0), atol=12)
    np.testing.assert_allclose(image[35, 55], (0, 0, 255), atol=12)


def test_grey_and_alpha_become_rgb(tmp_path):
    Image.fromarray(np.full((8, 9), 77, np.uint8)).save(tmp_path / "g.png")
    rgba = np.zeros((8, 9, 4), np.uint8)
    rgba[..., 1] = 200
    Image.fromarray(rgba).save(tmp_path / "a.png")
    np.testing.assert_array_equal(read_image(tmp_path / "g.png")[0, 0], (77, 77, 77))
    np.testing.assert_array_equal(read_image(tmp_path / "a.png")[0, 0], (0, 200, 0))


def test_exif_orientation_is_applied(tmp_path):
    """Orientation 6 = stored pixels must turn 90 degrees clockwise to display."""
    path = tmp_path / "phone.jpg"
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.fromarray(_blocks()).save(path, exif=exif, quality=95)
    image = read_image(path)
    assert image.shape == (60, 40, 3)
    # the red top-left quadrant of the stored pixels ends up top-right once turned clockwise
    np.testing.assert_allclose(image[5, 35], (255, 0, 0), atol=12)
    np.testing.assert_allclose(image[5, 5], (0, 0, 255), atol=12)


def test_list_images_sorted_and_filtered(tmp_path):
    for name in ["b.png", "a.jpg", "c.webp", "d.BMP", "notes.txt", "e.gif"]:
        (tmp_path / name).write_bytes(b"")
    (tmp_path / "sub.jpg").mkdir()
    assert [p.name for p in list_images(tmp_path)] == ["a.jpg", "b.png", "c.webp", "d.BMP"]


def test_corrupt_and_truncated_files_raise_clear_error(tmp_path):
    garbage = tmp_path / "garbage.jpg"
    garbage.write_bytes(b"this is not an image" * 10)
    with pytest.raises(ImageReadError, match="garbage.jpg: cannot decode image"):
        read_image(garbage)
    good = tmp_path / "good.jpg"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), np.uint8)).save(good)
    cut = tmp_path / "cut.jpg"
    cut.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    with pytest.raises(ImageReadError, match="cut.jpg: cannot decode image"):
        read_image(cut)
    with pytest.raises(ImageReadError, match="missing.png: no such image file"):
        read_image(tmp_path / "missing.png")


def test_folder_reports_bad_file_and_goes_on(tmp_path, caplog):
    Image.fromarray(_blocks()).save(tmp_path / "a.png")
    (tmp_path / "b.jpg").write_bytes(b"\xff\xd8 broken")
    Image.fromarray(_blocks()).save(tmp_path / "c.png")
    items = list(iter_image_folder(tmp_path))
    assert [i.path.name for i in items] == ["a.png", "b.jpg", "c.png"]
    assert items[0].image is not None and items[2].image is not None
    assert items[1].image is None and isinstance(items[1].error, ImageReadError)
    assert "b.jpg" in str(items[1].error) and "b.jpg" in caplog.text


def test_not_a_folder(tmp_path):
    with pytest.raises(ImageReadError, match="not a directory"):
        list(iter_image_folder(tmp_path / "nope"))


def test_sixteen_bit_grey_and_colour_scale_to_eight_bits(tmp_path):
    """A 16-bit grey PNG (Pillow's own conversion would clip it to white) and a 48-bit colour PNG."""
    import cv2

    ramp = np.linspace(0, 65535, 40 * 60).reshape(40, 60).astype(np.uint16)
    cv2.imwrite(str(tmp_path / "grey16.png"), ramp)
    grey = read_image(tmp_path / "grey16.png")
    assert grey.dtype == np.uint8 and grey.shape == (40, 60, 3)
    np.testing.assert_allclose(grey[..., 0].astype(float), ramp / 257.0, atol=0.51)
    assert (grey[..., 0] == grey[..., 2]).all()
    colour = np.stack([ramp, 65535 - ramp, np.full_like(ramp, 32896)], axis=-1)  # RGB
    cv2.imwrite(str(tmp_path / "colour16.png"), colour[..., ::-1])
    rgb = read_image(tmp_path / "colour16.png")
    np.testing.assert_allclose(rgb.astype(float), colour / 257.0, atol=1.01)


def test_heic_photo_reads_like_a_jpeg(tmp_path):
    """An HEIC photo (the phone default) reads like the JPEG of the same pixels. Its rotation is
    stored as HEIF transforms (irot/imir) that libheif applies on decoding; pillow-heif then sets the
    EXIF orientation to 1, so exif_transpose does not turn it twice."""
    pillow_heif = pytest.importorskip("pillow_heif", reason="pillow-heif is in requirements_pip.txt")
    pillow_heif.register_heif_opener()
    path = tmp_path / "IMG_0001.HEIC"
    Image.fromarray(_blocks()).save(path, quality=95)
    assert [p.name for p in list_images(tmp_path)] == ["IMG_0001.HEIC"]
    image = read_image(path)
    assert image.shape == (40, 60, 3) and image.dtype == np.uint8
    np.testing.assert_allclose(image[5, 5], (255, 0, 0), atol=20)
    np.testing.assert_allclose(image[35, 55], (0, 0, 255), atol=20)
