"""Preprocessing pinned where a small change gives a model other pixels or a client another
answer: exact geometry, the decode paths, colour modes, limits at their edges, error kinds.

An :class:`~accel_widgets.errors.ImageError`'s ``kind`` is what a client sees: the server
answers ``too_large`` with RESOURCE_EXHAUSTED and every other kind with INVALID_ARGUMENT,
so each refusal here checks its kind as well as its words. The geometry tests compare with
a reference written out here (Pillow: resize, then crop), bit for bit where the docstring
of :mod:`accel_widgets.preprocess` promises bit-identity.
"""

from __future__ import annotations

import io
import struct
import warnings

import numpy as np
import pytest
from PIL import Image

from accel_widgets.errors import ImageError
from accel_widgets.preprocess import PRESETS, Preprocessing, decode_image, prepare, prepare_array

BILINEAR = Image.Resampling.BILINEAR


def _photo(width: int, height: int, seed: int = 0) -> np.ndarray:
    """A smooth colour picture with some texture (a photo-like test card)."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width]
    image = np.stack(
        [
            128 + 100 * np.sin(x / 17.0),
            128 + 100 * np.cos(y / 23.0),
            (x + y) % 256,
        ],
        axis=-1,
    )
    image += rng.normal(0, 8, image.shape)
    return np.clip(image, 0, 255).astype(np.uint8)


def _encode(array: np.ndarray, fmt: str, **options) -> bytes:
    buffer = io.BytesIO()
    mode = "L" if array.ndim == 2 and array.dtype == np.uint8 else None
    Image.fromarray(array, mode).save(buffer, format=fmt, **options)
    return buffer.getvalue()


def _reference_crop(rgb: np.ndarray, short: int = 256, size: int = 224) -> np.ndarray:
    """Resize the short side to ``short`` (bilinear), then take the centre ``size`` square."""
    height, width = rgb.shape[:2]
    if width <= height:
        new = (short, round(height * short / width))
    else:
        new = (round(width * short / height), short)
    resized = np.asarray(Image.fromarray(rgb).resize(new, BILINEAR))
    top, left = (new[1] - size) // 2, (new[0] - size) // 2
    return resized[top : top + size, left : left + size]


# -- geometry -----------------------------------------------------------------------------------


@pytest.mark.parametrize(("width", "height"), [(451, 300), (300, 451), (333, 500), (640, 257)])
def test_exact_decode_is_resize_then_crop_bit_for_bit(width, height):
    rgb = _photo(width, height)
    out = prepare_array(rgb, Preprocessing(dtype="uint8"))[0]
    np.testing.assert_array_equal(out, _reference_crop(rgb))


@pytest.mark.parametrize(("width", "height"), [(451, 300), (300, 451), (500, 333)])
def test_fast_geometry_lands_within_one_grey_level_of_the_reference(width, height):
    rgb = _photo(width, height, seed=1)
    out = prepare_array(rgb, Preprocessing(dtype="uint8", decode="fast"))[0]
    reference = _reference_crop(rgb)
    assert out.shape == reference.shape
    assert np.abs(out.astype(int) - reference.astype(int)).max() <= 1


def test_an_image_already_at_the_short_side_is_only_cropped():
    rgb = _photo(300, 256)
    out = prepare_array(rgb, Preprocessing(dtype="uint8"))[0]
    np.testing.assert_array_equal(out, rgb[16:240, 38:262])


def test_stretch_is_one_bilinear_resize_and_none_at_the_size():
    rgb = _photo(600, 200)
    out = prepare_array(rgb, Preprocessing(size=300, resize="stretch", dtype="uint8"))[0]
    np.testing.assert_array_equal(
        out, np.asarray(Image.fromarray(rgb).resize((300, 300), BILINEAR))
    )
    square = _photo(224, 224)
    same = prepare_array(square, Preprocessing(resize="stretch", dtype="uint8"))[0]
    np.testing.assert_array_equal(same, square)


# -- decode paths --------------------------------------------------------------------------------


@pytest.mark.parametrize(("side", "decoded"), [(512, (306, 256)), (511, (611, 511))])
def test_dct_scaling_starts_at_twice_the_side_asked_for(side, decoded):
    """A 512 x 612 JPEG with 256 asked for decodes at half size; 511 x 611 at full size."""
    data = _encode(_photo(side, side + 100), "JPEG", quality=90)
    assert decode_image(data, min_side=256).shape[:2] == decoded
    assert decode_image(data).shape[:2] == (side + 100, side)


def test_exact_decode_never_scales_and_fast_decode_scales_to_the_step_it_needs():
    data = _encode(_photo(1200, 1200), "JPEG", quality=90)
    exact = Preprocessing(dtype="uint8")
    np.testing.assert_array_equal(prepare(data, exact), prepare_array(decode_image(data), exact))
    fast = Preprocessing(dtype="uint8", decode="fast")
    np.testing.assert_array_equal(
        prepare(data, fast), prepare_array(decode_image(data, min_side=256), fast)
    )
    assert not np.array_equal(prepare(data, fast), prepare(data, exact))


def test_fast_stretch_decodes_down_to_the_model_size_not_the_short_side():
    """Stretch has no short side: a 1200 px JPEG for a 600 px model decodes at 1/2 (600), not
    at 1/4 (300, then enlarged), which is what the unused short side of 256 would allow."""
    data = _encode(_photo(1200, 1200), "JPEG", quality=90)
    pre = Preprocessing(size=600, resize="stretch", dtype="uint8", decode="fast")
    np.testing.assert_array_equal(
        prepare(data, pre), prepare_array(decode_image(data, min_side=600), pre)
    )
    assert decode_image(data, min_side=600).shape == (600, 600, 3)


def test_fast_short_side_crop_decodes_down_to_the_short_side_not_the_model_size():
    """A 480 px JPEG for short side 256 is decoded at full size (halving would leave 240,
    below 256); only the model size (224) would allow halving it."""
    data = _encode(_photo(480, 480), "JPEG", quality=90)
    pre = Preprocessing(dtype="uint8", decode="fast")
    np.testing.assert_array_equal(prepare(data, pre), prepare_array(decode_image(data), pre))
    assert not np.array_equal(
        prepare(data, pre), prepare_array(decode_image(data, min_side=224), pre)
    )


@pytest.mark.parametrize(("width", "height"), [(1, 5), (5, 1), (1, 1)])
def test_a_one_pixel_wide_or_high_jpeg_is_an_image(width, height):
    data = _encode(np.full((height, width, 3), (200, 10, 10), np.uint8), "JPEG", quality=95)
    decoded = decode_image(data)
    assert decoded.shape == (height, width, 3)
    assert np.abs(decoded.astype(int) - [200, 10, 10]).max() <= 8
    assert prepare(data, Preprocessing(dtype="uint8")).shape == (1, 224, 224, 3)


def test_a_truncated_jpeg_stored_as_rgb_is_corrupt_in_our_words():
    """A JPEG whose colour space is RGB (no YCbCr transform) is libjpeg-turbo's to decode
    like any other: cut short, it is refused with the byte count, not passed to Pillow."""
    buffer = io.BytesIO()
    Image.fromarray(_photo(120, 80)).save(buffer, format="JPEG", keep_rgb=True)
    data = buffer.getvalue()
    assert decode_image(data).shape == (80, 120, 3)
    half = data[: len(data) // 2]
    with pytest.raises(ImageError) as refused:
        decode_image(half)
    assert refused.value.kind == "corrupt"
    assert str(refused.value).startswith(
        f"the JPEG is corrupt or truncated ({len(half):,} bytes): "
    )


# -- colour modes ----------------------------------------------------------------------------


def test_transparent_pixels_become_white_in_every_mode_with_alpha():
    la = np.zeros((4, 4, 2), np.uint8)
    la[..., 0] = 60
    la[:2, :, 1] = 255  # top half opaque grey 60, bottom half transparent
    decoded = decode_image(_encode_mode(la, "LA"))
    assert decoded[0, 0].tolist() == [60, 60, 60] and decoded[3, 3].tolist() == [255, 255, 255]
    palette = Image.new("P", (4, 4), 1)
    palette.putpalette([0, 0, 0, 200, 10, 10, 0, 0, 200] + [0] * 759)
    palette.paste(2, (0, 2, 4, 4))
    buffer = io.BytesIO()
    palette.save(buffer, format="PNG", transparency=2)  # index 2 (blue) is transparent
    decoded = decode_image(buffer.getvalue())
    assert decoded[0, 0].tolist() == [200, 10, 10] and decoded[3, 3].tolist() == [255, 255, 255]
    opaque = io.BytesIO()
    palette.save(opaque, format="PNG")  # the same palette without transparency: blue stays
    assert decode_image(opaque.getvalue())[3, 3].tolist() == [0, 0, 200]


def _encode_mode(array: np.ndarray, mode: str) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array, mode).save(buffer, format="PNG")
    return buffer.getvalue()


def test_sixteen_and_thirty_two_bit_grey_keep_their_top_eight_bits():
    grey16 = np.array([[0x0000, 0x00FF, 0x1234, 0xFFFF]], np.uint16)
    decoded = decode_image(_encode(grey16, "PNG"))
    assert decoded.dtype == np.uint8 and decoded.shape == (1, 4, 3)
    assert decoded[..., 0].tolist() == [[0, 0, 0x12, 0xFF]]
    assert (decoded[..., 0] == decoded[..., 2]).all()
    grey32 = np.array([[0, 0x1234, 70000, 5_000_000]], np.int32)
    buffer = io.BytesIO()
    Image.fromarray(grey32).save(buffer, format="TIFF")
    assert decode_image(buffer.getvalue())[..., 1].tolist() == [[0, 0x12, 255, 255]]


def _png_with_colour_key(array: np.ndarray, key: int | tuple[int, int, int]) -> bytes:
    """A PNG whose ``tRNS`` chunk marks one grey level or one colour transparent."""
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG", transparency=key)
    return buffer.getvalue()


def test_a_png_colour_key_is_transparent_in_grey_rgb_and_sixteen_bit_grey():
    """A PNG without an alpha channel may still mark one grey level or colour transparent
    (``tRNS``); those pixels are white, like every other transparent pixel, and the others
    keep their value (a logo on a colour-keyed background does not reach the model with the
    key colour as its background)."""
    grey = np.array([[0, 32, 64, 255]], np.uint8)
    assert decode_image(_png_with_colour_key(grey, 32))[..., 0].tolist() == [[0, 255, 64, 255]]
    rgb = np.zeros((1, 3, 3), np.uint8)
    rgb[0, 0] = (10, 20, 30)
    rgb[0, 1] = (10, 20, 31)
    decoded = decode_image(_png_with_colour_key(rgb, (10, 20, 30)))
    assert decoded[0].tolist() == [[255, 255, 255], [10, 20, 31], [0, 0, 0]]
    grey16 = np.array([[0x0100, 0x1234, 0x1235, 0xFFFF]], np.uint16)
    decoded = decode_image(_png_with_colour_key(grey16, 0x1234))
    assert decoded[..., 1].tolist() == [[0x01, 0xFF, 0x12, 0xFF]]


def _tiff(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="TIFF")
    return buffer.getvalue()


def test_big_endian_sixteen_bit_and_negative_thirty_two_bit_grey():
    """A big-endian 16-bit TIFF (Pillow's ``I;16B``) keeps its top 8 bits like a little-endian
    one; a 32-bit grey level below 0 is black, not wrapped round to white."""
    big = np.array([[0x0000, 0x00FF, 0x1234, 0xFFFF]], ">u2")
    opened = Image.open(io.BytesIO(_tiff(Image.fromarray(big))))
    assert opened.mode == "I;16B"  # the mode this test is about
    assert decode_image(_tiff(Image.fromarray(big)))[..., 2].tolist() == [[0, 0, 0x12, 0xFF]]
    signed = np.array([[-70000, -1, 0x0100, 0x7FFF]], np.int32)
    assert decode_image(_tiff(Image.fromarray(signed)))[..., 0].tolist() == [[0, 0, 1, 0x7F]]


def test_a_palette_with_alpha_tiff_is_composited_over_white():
    """Pillow opens a palette-plus-alpha TIFF as ``PA``: its transparent pixels are white."""
    image = Image.new("PA", (2, 1))
    image.putpalette([200, 10, 10] + [0] * 765)
    image.putdata([(0, 255), (0, 0)])
    assert Image.open(io.BytesIO(_tiff(image))).mode == "PA"
    assert decode_image(_tiff(image))[0].tolist() == [[200, 10, 10], [255, 255, 255]]


def test_pillows_own_bomb_warning_is_not_raised_for_an_image_within_our_limit(monkeypatch):
    """Our ``max_pixels`` replaces Pillow's warning (which fires above its process-wide
    ``MAX_IMAGE_PIXELS``): an image within our limit decodes without a warning, even where
    warnings are errors (as in a test suite or ``python -W error``)."""
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)  # 40 x 40 is above it, below 2x
    data = _encode(_photo(40, 40), "PNG")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert decode_image(data).shape == (40, 40, 3)
    with pytest.raises(ImageError) as refused:
        decode_image(data, max_pixels=1599)
    assert refused.value.kind == "too_large"


# -- limits at their edges ---------------------------------------------------------------------


@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "GIF", "BMP"])
def test_max_pixels_takes_exactly_the_limit_and_refuses_one_more(fmt):
    data = _encode(_photo(40, 30), fmt)
    assert decode_image(data, max_pixels=1200).shape == (30, 40, 3)
    with pytest.raises(ImageError) as refused:
        decode_image(data, max_pixels=1199)
    assert refused.value.kind == "too_large"
    assert str(refused.value) == (
        "the image is too large: 40x30 = 1,200 pixels, the limit is 1,199; resize it before sending"
    )
    with pytest.raises(ImageError, match="the limit is 1,199"):
        prepare(data, Preprocessing(), max_pixels=1199)


def test_a_png_header_beyond_any_int32_is_too_large_not_negative():
    data = bytearray(_encode(_photo(8, 8), "PNG"))
    data[16:24] = struct.pack(">II", 2**31, 1)
    with pytest.raises(ImageError) as refused:
        decode_image(bytes(data))
    assert refused.value.kind == "too_large"
    assert "2147483648x1 = 2,147,483,648 pixels" in str(refused.value)


def test_a_png_cut_right_after_its_size_is_judged_by_its_size():
    """24 bytes hold the signature, the IHDR tag and the width and height: enough to refuse
    a bomb as too large (RESOURCE_EXHAUSTED for a client), not as a corrupt file."""
    data = bytearray(_encode(_photo(8, 8), "PNG")[:24])
    data[16:24] = struct.pack(">II", 100_000, 100_000)
    with pytest.raises(ImageError) as refused:
        decode_image(bytes(data))
    assert refused.value.kind == "too_large"
    assert "100000x100000 = 10,000,000,000 pixels" in str(refused.value)


def test_a_gif_beyond_pillows_own_bomb_limit_is_too_large():
    """Pillow refuses sizes above twice its limit while opening, before our check runs."""
    data = bytearray(_encode(_photo(8, 8), "GIF"))
    data[6:10] = struct.pack("<HH", 65535, 65535)
    with pytest.raises(ImageError) as refused:
        decode_image(bytes(data), max_pixels=10**10)
    assert refused.value.kind == "too_large"
    assert str(refused.value).startswith("the image is too large: ")
    assert "4294836225 pixels" in str(refused.value)


# -- refusals: kind and words --------------------------------------------------------------------


@pytest.mark.parametrize("cut", [17, 20, 23])
def test_a_png_cut_inside_its_header_is_corrupt_not_a_crash(cut):
    data = _encode(_photo(8, 8), "PNG")[:cut]
    with pytest.raises(ImageError) as refused:
        decode_image(data)
    assert refused.value.kind == "corrupt"
    assert str(refused.value) == "the image is corrupt or truncated: Truncated File Read"


def test_bytes_that_only_look_like_a_png_header_are_not_an_image():
    data = b"\0" * 12 + b"IHDR" + b"\0\0"
    with pytest.raises(ImageError) as refused:
        decode_image(data)
    assert refused.value.kind == "not_image"


def test_what_is_not_bytes_or_is_empty_is_refused_by_kind():
    with pytest.raises(ImageError) as refused:
        decode_image("a path, not the file")  # type: ignore[arg-type]
    assert (refused.value.kind, str(refused.value)) == (
        "not_image",
        "image data must be bytes; got str",
    )
    with pytest.raises(ImageError) as refused:
        decode_image(b"")
    assert (refused.value.kind, str(refused.value)) == ("empty", "the image is empty (0 bytes)")
    png = _encode(_photo(8, 8), "PNG")
    assert decode_image(bytearray(png)).shape == decode_image(memoryview(png)).shape == (8, 8, 3)


def test_unknown_bytes_name_their_first_sixteen():
    with pytest.raises(ImageError) as refused:
        decode_image(b"0123456789abcdefXYZ")
    assert refused.value.kind == "not_image"
    assert str(refused.value) == (
        "the bytes are not a JPEG or PNG image: first bytes b'0123456789abcdef' (19 bytes in all)"
    )


def test_corrupt_files_are_corrupt_with_their_format_named():
    png = _encode(_photo(64, 64), "PNG")
    with pytest.raises(ImageError) as refused:
        decode_image(png[:-40])
    assert refused.value.kind == "corrupt"
    assert str(refused.value).startswith("the PNG is corrupt or truncated: ")
    with pytest.raises(ImageError) as refused:
        decode_image(b"\xff\xd8\xff\xe0 not really a JPEG")
    assert refused.value.kind == "corrupt"
    assert str(refused.value).startswith("the JPEG is corrupt or truncated (22 bytes): ")


@pytest.mark.parametrize("mode", ["RGB", "L"])
def test_a_truncated_jpeg_is_corrupt_and_says_how_many_bytes_came(mode):
    rgb = _photo(300, 200)
    data = _encode(rgb if mode == "RGB" else rgb[..., 0], "JPEG", quality=90)
    half = data[: len(data) // 2]
    with pytest.raises(ImageError) as refused:
        decode_image(half)
    assert refused.value.kind == "corrupt"
    assert str(refused.value).startswith(
        f"the JPEG is corrupt or truncated ({len(half):,} bytes): "
    )


def test_a_truncated_cmyk_jpeg_goes_to_pillow_and_is_corrupt():
    """libjpeg-turbo decodes CMYK to RGB itself; when it cannot, Pillow gets the file, and a
    truncated one is reported in Pillow's words."""
    buffer = io.BytesIO()
    Image.fromarray(_photo(120, 80)).convert("CMYK").save(buffer, format="JPEG")
    data = buffer.getvalue()
    with pytest.raises(ImageError) as refused:
        decode_image(data[: len(data) // 2])
    assert refused.value.kind == "corrupt"
    assert str(refused.value).startswith(
        "the JPEG is corrupt or truncated: image file is truncated"
    )


def test_arrays_without_pixels_or_of_other_types_are_refused():
    for shape in ((0, 5, 3), (5, 0, 3)):
        with pytest.raises(ValueError) as refused:
            prepare_array(np.zeros(shape, np.uint8), Preprocessing())
        assert str(refused.value) == f"the image has no pixels: shape {shape}"
    assert prepare_array(np.zeros((1, 1, 3), np.uint8), Preprocessing()).shape == (1, 224, 224, 3)
    with pytest.raises(ValueError, match="dtype float32"):
        prepare_array(np.zeros((8, 8, 3), np.float32), Preprocessing())


# -- the settings themselves --------------------------------------------------------------------


@pytest.mark.parametrize("name", list(PRESETS))
def test_presets_give_their_conventions_and_other_keys_override_them(name):
    pre = Preprocessing.from_dict({"preset": name})
    for key, value in PRESETS[name].items():
        assert getattr(pre, key) == (
            tuple(float(v) for v in value) if key in ("mean", "std") else value
        )
    given = {"preset": name, "size": 299, "short_side": 342, "channel_order": "BGR"}
    over = Preprocessing.from_dict(given)
    assert (over.size, over.short_side, over.channel_order) == (299, 342, "BGR")
    assert over.mean == pre.mean and over.scale == pre.scale
    assert given["preset"] == name  # the caller's dict is left as it was


def test_caffe_preset_is_bgr_minus_the_imagenet_mean():
    pre = Preprocessing.from_dict({"preset": "caffe"})
    assert pre == Preprocessing(channel_order="BGR", mean=(103.939, 116.779, 123.68))


def test_an_unknown_preset_names_the_presets():
    with pytest.raises(ValueError) as refused:
        Preprocessing.from_dict({"preset": "keras"})
    assert (
        str(refused.value) == "unknown preprocessing preset 'keras'; presets are caffe, torch, tf"
    )


def test_from_dict_refusals_in_words():
    with pytest.raises(ValueError) as refused:
        Preprocessing.from_dict(["size", 224])  # type: ignore[arg-type]
    assert str(refused.value) == "preprocessing must be a JSON object; got list"
    with pytest.raises(ValueError) as refused:
        Preprocessing.from_dict({"colour": 1, "sizes": 2})
    assert str(refused.value).startswith("unknown preprocessing field(s) colour, sizes; ")
    assert str(refused.value).endswith(
        "valid fields are channel_order, decode, dtype, layout, mean, resize, scale, "
        "short_side, size, std"
    )
    for name in ("mean", "std"):
        with pytest.raises(ValueError) as refused:
            Preprocessing.from_dict({name: 5})
        assert str(refused.value) == f"Preprocessing.{name} must be a list of three numbers; got 5"
    assert Preprocessing.from_dict({"mean": [1, 2, 3]}).mean == (1.0, 2.0, 3.0)


@pytest.mark.parametrize(
    ("fields", "valid"),
    [
        ({"size": 1, "short_side": 1}, True),
        ({"size": 8192, "short_side": 8192}, True),
        ({"size": 0}, False),
        ({"size": 8193, "short_side": 8193}, False),
        ({"short_side": 8193}, False),
        ({"size": True}, False),
        ({"size": 224.0}, False),
    ],
)
def test_sizes_are_integers_from_1_to_8192(fields, valid):
    if valid:
        Preprocessing(**fields)
        return
    with pytest.raises(ValueError) as refused:
        Preprocessing(**fields)
    name = "size" if "size" in fields else "short_side"
    assert str(refused.value) == (
        f"Preprocessing.{name} must be an integer from 1 to 8192; got {fields[name]!r}"
    )


@pytest.mark.parametrize("scale", [0, 0.0, float("inf"), float("nan"), True, "1"])
def test_scale_must_be_a_finite_non_zero_number(scale):
    with pytest.raises(ValueError) as refused:
        Preprocessing(scale=scale)
    assert str(refused.value) == (
        f"Preprocessing.scale must be a finite non-zero number; got {scale!r}"
    )


def test_scale_is_stored_as_a_float_and_means_must_be_numbers():
    pre = Preprocessing(scale=2)
    assert isinstance(pre.scale, float) and pre.to_dict()["scale"] == 2.0
    with pytest.raises(ValueError, match="mean must be three finite numbers"):
        Preprocessing(mean=("a", 0, 0))  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "fields",
    [{"scale": 2.0}, {"mean": (1, 0, 0)}, {"std": (1, 2, 1)}],
    ids=["scale", "mean", "std"],
)
def test_uint8_refuses_any_normalisation(fields):
    with pytest.raises(ValueError) as refused:
        Preprocessing(dtype="uint8", **fields)
    assert str(refused.value) == (
        "Preprocessing.dtype 'uint8' feeds raw pixels: scale must be 1, mean 0 and std 1"
    )
