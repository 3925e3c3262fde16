"""Image bytes to model input: formats, geometry, channel order, layout, and clear errors."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image
from serving_fixtures import jpeg_bytes, png_bytes

from accel_widgets.errors import ImageError
from accel_widgets.preprocess import Preprocessing, decode_image, prepare, prepare_array


def _quadrants(height: int, width: int) -> np.ndarray:
    """Red top-left, green top-right, blue bottom-left, white bottom-right."""
    image = np.zeros((height, width, 3), np.uint8)
    h, w = height // 2, width // 2
    image[:h, :w] = (255, 0, 0)
    image[:h, w:] = (0, 255, 0)
    image[h:, :w] = (0, 0, 255)
    image[h:, w:] = (255, 255, 255)
    return image


def test_defaults_are_the_catalog_models_input():
    pre = Preprocessing()
    out = prepare(jpeg_bytes(), pre)
    assert out.shape == (1, 224, 224, 3) and out.dtype == np.float32
    assert out.flags.c_contiguous
    assert out.min() >= 0.0 and out.max() <= 255.0


def test_bgr_reverses_channels_and_nchw_moves_them_first():
    rgb = _quadrants(256, 256)
    nhwc = prepare_array(rgb, Preprocessing(short_side=256, size=256))
    bgr_nchw = prepare_array(
        rgb, Preprocessing(short_side=256, size=256, channel_order="BGR", layout="NCHW")
    )
    assert bgr_nchw.shape == (1, 3, 256, 256)
    np.testing.assert_array_equal(bgr_nchw[0], nhwc[0][..., ::-1].transpose(2, 0, 1))
    # Top-left is red: in BGR order, channel 2 carries it.
    assert bgr_nchw[0, :, 10, 10].tolist() == [0.0, 0.0, 255.0]


def test_scale_mean_std_follow_the_model_channel_order():
    rgb = np.full((224, 224, 3), (100, 150, 200), np.uint8)
    pre = Preprocessing(short_side=224, scale=1 / 255, mean=(0.5, 0.25, 0.0), std=(0.5, 0.25, 1.0))
    out = prepare_array(rgb, pre)[0, 0, 0]
    expected = (np.array([100, 150, 200]) / 255 - [0.5, 0.25, 0.0]) / [0.5, 0.25, 1.0]
    np.testing.assert_allclose(out, expected, rtol=1e-6)


def test_float16_and_uint8_outputs():
    rgb = _quadrants(300, 400)
    half = prepare_array(rgb, Preprocessing(dtype="float16", layout="NCHW"))
    raw = prepare_array(rgb, Preprocessing(dtype="uint8", layout="NCHW"))
    assert half.dtype == np.float16 and raw.dtype == np.uint8
    np.testing.assert_array_equal(half.astype(np.float32), raw.astype(np.float32))


def test_short_side_crop_geometry_matches_resize_then_centre_crop():
    # 300 x 600 landscape: short side 300 -> 256, long side 600 -> 512, crop the centre 224.
    rng = np.random.default_rng(0)
    rgb = (rng.random((300, 600, 3)) * 255).astype(np.uint8)
    out = prepare_array(rgb, Preprocessing(dtype="uint8"))[0]
    resized = np.asarray(Image.fromarray(rgb).resize((512, 256), Image.Resampling.BILINEAR))
    top, left = (256 - 224) // 2, (512 - 224) // 2
    reference = resized[top : top + 224, left : left + 224]
    assert np.abs(out.astype(int) - reference.astype(int)).max() <= 1


def test_crop_keeps_the_centre_of_a_portrait_image():
    # A 640 x 320 portrait with a marker square at its centre stays centred after the crop.
    rgb = np.zeros((640, 320, 3), np.uint8)
    rgb[300:340, 140:180] = 255
    out = prepare_array(rgb, Preprocessing(dtype="uint8"))[0, ..., 0]
    ys, xs = np.nonzero(out > 128)
    assert abs(ys.mean() - 111.5) < 2 and abs(xs.mean() - 111.5) < 2


def test_stretch_resizes_without_cropping():
    rgb = _quadrants(200, 600)
    out = prepare_array(rgb, Preprocessing(size=300, resize="stretch", dtype="uint8"))[0]
    assert out.shape == (300, 300, 3)
    assert out[5, 5].tolist() == [255, 0, 0] and out[-5, -5].tolist() == [255, 255, 255]


def test_grey_and_rgba_png_become_rgb():
    grey = np.full((50, 60), 77, np.uint8)
    decoded = decode_image(png_bytes(grey, "L"))
    assert decoded.shape == (50, 60, 3) and (decoded == 77).all()
    rgba = np.zeros((40, 40, 4), np.uint8)
    rgba[..., 0] = 200
    rgba[:20, :, 3] = 255  # top half opaque red, bottom half fully transparent
    decoded = decode_image(png_bytes(rgba, "RGBA"))
    assert decoded[5, 5].tolist() == [200, 0, 0]
    assert decoded[35, 5].tolist() == [255, 255, 255]  # transparent -> white background


def test_grey_and_cmyk_jpeg_become_rgb():
    from skimage import data

    cat = Image.fromarray(data.chelsea())
    for mode in ("L", "CMYK"):
        buffer = io.BytesIO()
        cat.convert(mode).save(buffer, format="JPEG", quality=95)
        decoded = decode_image(buffer.getvalue())
        reference = np.asarray(Image.open(io.BytesIO(buffer.getvalue())).convert("RGB"))
        assert decoded.shape == (300, 451, 3)
        assert np.abs(decoded.astype(int) - reference.astype(int)).mean() < 3, mode


def test_large_jpeg_uses_dct_scaling_and_still_matches():
    from skimage import data

    big = Image.fromarray(data.chelsea()).resize((1804, 1200), Image.Resampling.BILINEAR)
    buffer = io.BytesIO()
    big.save(buffer, format="JPEG", quality=92)
    scaled = decode_image(buffer.getvalue(), min_side=256)
    assert min(scaled.shape[:2]) >= 256 and scaled.shape[0] < 1200
    full = prepare(buffer.getvalue(), Preprocessing())
    reference = prepare_array(np.asarray(Image.open(buffer).convert("RGB")), Preprocessing())
    assert np.abs(full - reference).mean() < 3.0


@pytest.mark.parametrize(
    ("data", "words"),
    [
        pytest.param(b"", "empty", id="empty"),
        pytest.param(
            b"hello, this is text", "not a JPEG or PNG image: first bytes b'hello", id="text"
        ),
        pytest.param(jpeg_bytes()[:300], "corrupt or truncated", id="jpeg-header-only"),
        pytest.param(png_bytes(np.zeros((64, 64, 3), np.uint8))[:60], "PNG", id="png-cut"),
    ],
)
def test_bad_bytes_raise_image_error_with_a_reason(data, words):
    with pytest.raises(ImageError) as info:
        prepare(data, Preprocessing())
    assert words in str(info.value)
    assert info.value.kind != "too_large"


def test_truncated_jpeg_body_is_reported():
    data = jpeg_bytes()
    with pytest.raises(ImageError, match="corrupt or truncated"):
        decode_image(data[: len(data) // 2])


def _jpeg_claiming(width: int, height: int) -> bytes:
    data = bytearray(jpeg_bytes())
    sof = data.find(b"\xff\xc0")
    data[sof + 5 : sof + 7] = height.to_bytes(2, "big")
    data[sof + 7 : sof + 9] = width.to_bytes(2, "big")
    return bytes(data)


def _png_claiming(width: int, height: int) -> bytes:
    """A real small PNG whose header (IHDR, CRC fixed up) claims another size."""
    import struct
    import zlib

    data = bytearray(png_bytes(np.zeros((8, 8, 3), np.uint8)))
    data[16:24] = struct.pack(">II", width, height)
    data[29:33] = struct.pack(">I", zlib.crc32(bytes(data[12:29])))
    return bytes(data)


@pytest.mark.parametrize("fmt", ["jpeg", "png"])
def test_decompression_bomb_is_refused_before_decoding(fmt):
    bomb = _jpeg_claiming(30000, 30000) if fmt == "jpeg" else _png_claiming(30000, 30000)
    with pytest.raises(ImageError) as info:
        decode_image(bomb)
    assert info.value.kind == "too_large"
    assert "30000x30000" in str(info.value) and "limit" in str(info.value)


def test_max_pixels_is_configurable():
    with pytest.raises(ImageError, match="too large"):
        decode_image(jpeg_bytes(), max_pixels=1000)


def test_preprocessing_round_trips_through_a_dict():
    pre = Preprocessing(channel_order="BGR", layout="NCHW", dtype="float16", mean=(1, 2, 3))
    assert Preprocessing.from_dict(pre.to_dict()) == pre
    assert Preprocessing.from_dict(None) == Preprocessing()


@pytest.mark.parametrize(
    ("d", "words"),
    [
        ({"layout": "CHW"}, "layout must be one of NHWC, NCHW"),
        ({"channel_order": "rgb"}, "channel_order must be one of RGB, BGR"),
        ({"dtype": "int8"}, "dtype must be one of float32, float16, uint8"),
        ({"resize": "crop"}, "resize must be one of short_side_crop, stretch"),
        ({"size": 300, "short_side": 256}, "short_side (256) must be at least size (300)"),
        ({"mean": [1, 2]}, "mean must be three finite numbers"),
        ({"std": [1, 0, 1]}, "std must not contain 0"),
        ({"dtype": "uint8", "scale": 0.5}, "uint8"),
        ({"colour": "RGB"}, "unknown preprocessing field(s) colour; valid fields are"),
    ],
)
def test_bad_preprocessing_names_the_field_and_valid_values(d, words):
    with pytest.raises(ValueError) as info:
        Preprocessing.from_dict(d)
    assert words in str(info.value)


def test_prepare_array_rejects_non_rgb_arrays():
    with pytest.raises(ValueError, match="H x W x 3 uint8"):
        prepare_array(np.zeros((10, 10), np.uint8), Preprocessing())
