"""Known answers for every normalisation step: pixels in, exactly the documented numbers out.

The conversion and serving tests compare ONNX with TensorFlow built from the same graph, so a
mistake in that graph (means reversed, BGR flipped at the wrong moment) is made on both sides
and passes them. These tests compare with numbers written down from the weights' own
documentation instead: Keras' ``preprocess_input`` for each catalog architecture ("caffe":
BGR, minus the ImageNet means 103.939, 116.779, 123.68 in BGR order; "torch": RGB, /255,
minus 0.485, 0.456, 0.406, over 0.229, 0.224, 0.225) and SOURCES.md for the two real ONNX
models (SqueezeNet: BGR 0..255; MobileNetV2: RGB with the torch mean and std).

One pixel has three different channel values (R 200, G 100, B 30) so that any channel swap,
before or after the subtraction, changes at least two numbers by more than 6.
"""

from __future__ import annotations

import io
import struct
import zlib

import numpy as np
import pytest
from PIL import Image

from accel_widgets.engine.models.catalog import list_specs
from accel_widgets.errors import ImageError
from accel_widgets.preprocess import Preprocessing, prepare

PIXEL = (200, 100, 30)  # R, G, B

#: The answer for PIXEL, written out by hand from Keras' documented preprocessing.
CAFFE_ANSWER = (30 - 103.939, 100 - 116.779, 200 - 123.68)  # B, G, R minus the BGR means
TORCH_ANSWER = (
    (200 / 255 - 0.485) / 0.229,
    (100 / 255 - 0.456) / 0.224,
    (30 / 255 - 0.406) / 0.225,
)
ANSWERS = {"caffe": CAFFE_ANSWER, "torch": TORCH_ANSWER}

#: Each catalog architecture's own preprocessing function in Keras.
KERAS_MODULES = {
    "ResNet50": "resnet50",
    "ResNet152": "resnet",
    "DenseNet121": "densenet",
    "VGG16": "vgg16",
    "ssd_vgg": "vgg16",  # SSD300's backbone is VGG-16 with its Caffe weights
}

GRAPH_SPECS = [spec for spec in list_specs() if spec.graph_ready]


def known_image(size: int) -> np.ndarray:
    """``size x size`` RGB floats 0..255 with PIXEL at (0, 0) and every channel different."""
    y, x = np.mgrid[0:size, 0:size]
    image = np.stack([x % 256, y % 256, (255 - (x + 2 * y)) % 256], axis=-1).astype(np.float32)
    image[0, 0] = PIXEL
    return image


@pytest.fixture(scope="module")
def tf_keras():
    tf = pytest.importorskip("tensorflow")
    import keras

    return tf, keras


def identity(keras, size: int):
    """A 'network' that returns its input: what comes out is the normalisation alone."""
    inputs = keras.Input((size, size, 3))
    return keras.Model(inputs, keras.layers.Identity()(inputs))


def _keras_reference(keras, architecture: str, image: np.ndarray) -> np.ndarray:
    import importlib

    module = importlib.import_module(f"keras.applications.{KERAS_MODULES[architecture]}")
    return np.asarray(module.preprocess_input(image.copy()))


@pytest.mark.parametrize("spec", GRAPH_SPECS, ids=[s.name for s in GRAPH_SPECS])
def test_savedmodel_graph_normalises_a_known_pixel_and_image(spec, tf_keras):
    """``predict_pixels`` (what the SavedModel serves and the stock converter converts; SSD's
    graph takes the same normaliser)."""
    from accel_widgets.engine.models.build import make_serving_module

    tf, keras = tf_keras
    image = known_image(spec.input_size)
    module = make_serving_module(identity(keras, spec.input_size), spec.preprocessing())
    out = module.predict_pixels(tf.constant(image[np.newaxis])).numpy()[0]
    np.testing.assert_allclose(out[0, 0], ANSWERS[spec.weights_mode], rtol=0, atol=1e-4)
    expected = _keras_reference(keras, spec.architecture, image)
    np.testing.assert_allclose(out, expected, rtol=0, atol=1e-4)


@pytest.mark.parametrize("spec", GRAPH_SPECS, ids=[s.name for s in GRAPH_SPECS])
def test_low_memory_converter_graph_normalises_a_known_pixel_and_image(spec, tf_keras):
    """``pixel_model`` (what the low-memory converter traces) gives the same known answers."""
    from accel_widgets.engine.models.build import pixel_model

    _, keras = tf_keras
    size = spec.input_size
    image = known_image(size)
    model = pixel_model(identity(keras, size), spec.preprocessing()["graph"], size)
    out = np.asarray(model(image[np.newaxis], training=False))[0]
    np.testing.assert_allclose(out[0, 0], ANSWERS[spec.weights_mode], rtol=0, atol=1e-4)
    expected = _keras_reference(keras, spec.architecture, image)
    np.testing.assert_allclose(out, expected, rtol=0, atol=1e-4)


# -- the server's preprocessing for the real ONNX models, as the engine registers them ---------


def _png(image: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(image.astype(np.uint8), "RGB").save(buffer, format="PNG")
    return buffer.getvalue()


@pytest.fixture(scope="module")
def registered_preprocessing(tmp_path_factory, weights_dir):
    """model -> the server Preprocessing the engine records when each real model is registered
    with the options it is documented to need (the walk's own options for SqueezeNet)."""
    from accel_widgets.engine.models.register import register_onnx
    from accel_widgets.engine.store.workspace import Workspace
    from accel_widgets.engine.walk.choices import SAMPLE_NAME, model_choices

    workspace = Workspace(tmp_path_factory.mktemp("known-answers") / "workspace")
    squeezenet = next(c for c in model_choices() if c.key == SAMPLE_NAME)
    assert squeezenet.path == weights_dir / "SqueezeNet_fp16.onnx"
    options = {
        "squeezenet": (squeezenet.path, squeezenet.register_options["preprocessing"]),
        "mobilenet": (
            weights_dir / "mobilenetv2-12-int8.onnx",
            {"scale": 1 / 255, "mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225]},
        ),
    }
    found = {}
    for name, (path, preprocessing) in options.items():
        record = register_onnx(path, name, preprocessing=preprocessing, workspace=workspace)
        found[name] = Preprocessing.from_dict(record.spec["preprocessing"]["server"])
    return found


def test_squeezenet_gets_bgr_pixels_minus_the_caffe_mean_channels_first(registered_preprocessing):
    """DeepScale trained SqueezeNet 1.1 on BGR 0-255 pixels minus the Caffe mean 104/117/123
    (../shared/weights/SOURCES.md); without the mean top-1 falls from 0.60 to 0.45."""
    pre = registered_preprocessing["squeezenet"]
    uniform = np.zeros((300, 400, 3)) + PIXEL  # any resize keeps a uniform picture uniform
    out = prepare(_png(uniform), pre)
    assert out.shape == (1, 3, 224, 224) and out.dtype == np.float16
    b, g, r = PIXEL[2], PIXEL[1], PIXEL[0]
    assert out[0, :, 100, 100].tolist() == [b - 104.0, g - 117.0, r - 123.0]
    # 256 x 256 is already "short side 256": the centre crop is rows and columns 16..239.
    image = known_image(256)
    out = prepare(_png(image), pre)[0]
    crop = image[16:240, 16:240]
    caffe_mean = np.array([104.0, 117.0, 123.0]).reshape(3, 1, 1)
    expected = (crop[..., ::-1].transpose(2, 0, 1) - caffe_mean).astype(np.float16)
    np.testing.assert_array_equal(out, expected)


def test_mobilenet_gets_torch_normalised_rgb_channels_first(registered_preprocessing):
    pre = registered_preprocessing["mobilenet"]
    uniform = np.zeros((300, 400, 3)) + PIXEL
    out = prepare(_png(uniform), pre)
    assert out.shape == (1, 3, 224, 224) and out.dtype == np.float32
    np.testing.assert_allclose(out[0, :, 100, 100], TORCH_ANSWER, rtol=0, atol=1e-5)
    image = known_image(256)
    out = prepare(_png(image), pre)[0]
    crop = image[16:240, 16:240] / 255
    expected = ((crop - [0.485, 0.456, 0.406]) / [0.229, 0.224, 0.225]).transpose(2, 0, 1)
    np.testing.assert_allclose(out, expected, rtol=0, atol=1e-5)


# -- the decode paths: "exact" is the reference's pixels, "fast" a measured approximation -------


def _reference_crop(data: bytes) -> np.ndarray:
    """Pillow full decode, bilinear resize of the short side to 256, centre crop 224."""
    image = Image.open(io.BytesIO(data)).convert("RGB")
    width, height = image.size
    if width <= height:
        size = (256, round(height * 256 / width))
    else:
        size = (round(width * 256 / height), 256)
    image = image.resize(size, Image.Resampling.BILINEAR)
    left, top = (size[0] - 224) // 2, (size[1] - 224) // 2
    return np.asarray(image.crop((left, top, left + 224, top + 224)))


@pytest.fixture(scope="module")
def large_photo() -> bytes:
    """The cat enlarged to 1024 x 768: big enough for the fast path's DCT scaling (1/2)."""
    from accel_widgets.engine.checks.samples import encode_jpeg, sample_photos

    cat = Image.open(io.BytesIO(sample_photos(["chelsea"])[0].data))
    return encode_jpeg(np.asarray(cat.resize((1024, 768), Image.Resampling.BICUBIC)))


def test_exact_decode_is_the_reference_pipeline_bit_for_bit(large_photo):
    out = prepare(large_photo, Preprocessing(dtype="uint8"))[0]
    assert Preprocessing().decode == "exact"  # what a model gets unless its config says fast
    np.testing.assert_array_equal(out, _reference_crop(large_photo))


def test_fast_decode_stays_within_its_documented_distance(large_photo):
    """Measured on this photo: at most 8 grey levels, 0.66 on average (preprocess.py)."""
    out = prepare(large_photo, Preprocessing(dtype="uint8", decode="fast"))[0].astype(int)
    diff = np.abs(out - _reference_crop(large_photo).astype(int))
    assert 0 < diff.max() <= 16 and diff.mean() < 1.5


def test_a_server_config_names_the_valid_decode_paths():
    from serving_fixtures import squeezenet_model

    from accel_widgets.errors import ServingError
    from accel_widgets.serving.config import ServerConfig

    model = squeezenet_model()
    model["preprocessing"] = {**model["preprocessing"], "decode": "fast"}
    loaded = ServerConfig.from_dict({"models": [model]})
    assert loaded.models[0].preprocessing.decode == "fast"
    model["preprocessing"]["decode"] = "quick"
    with pytest.raises(ServingError) as info:
        ServerConfig.from_dict({"models": [model]})
    assert "models[0].preprocessing: Preprocessing.decode must be one of exact, fast" in str(
        info.value
    )


# -- the decompression-bomb limit, pinned from both sides ----------------------------------------

#: The documented default limit (preprocess.MAX_PIXELS), written out: the tests below must
#: fail on behaviour when the code's limit moves, not on a copy of the constant.
LIMIT = 50_000_000
LIMIT_WIDTH = 10_000
LIMIT_HEIGHT = LIMIT // LIMIT_WIDTH


def _encoded(fmt: str, width: int, height: int) -> bytes:
    buffer = io.BytesIO()
    options = {"quality": 50} if fmt == "JPEG" else {"compress_level": 1}
    Image.new("RGB", (width, height), PIXEL).save(buffer, format=fmt, **options)
    return buffer.getvalue()


def _one_more_row(data: bytes, fmt: str) -> bytes:
    """The same file with its header claiming one more row of pixels."""
    patched = bytearray(data)
    height = LIMIT_HEIGHT + 1
    if fmt == "JPEG":
        sof = patched.find(b"\xff\xc0")
        patched[sof + 5 : sof + 7] = height.to_bytes(2, "big")
    else:
        patched[20:24] = struct.pack(">I", height)
        patched[29:33] = struct.pack(">I", zlib.crc32(bytes(patched[12:29])))
    return bytes(patched)


@pytest.mark.parametrize("fmt", ["JPEG", "PNG"])
def test_pixel_limit_accepts_exactly_the_limit_and_refuses_one_row_more(fmt):
    at_limit = _encoded(fmt, LIMIT_WIDTH, LIMIT_HEIGHT)
    out = prepare(at_limit, Preprocessing(dtype="uint8"))
    assert out.shape == (1, 224, 224, 3)
    assert np.abs(out[0, 100, 100].astype(int) - PIXEL).max() <= 5  # JPEG's colour rounding
    with pytest.raises(ImageError) as info:
        prepare(_one_more_row(at_limit, fmt), Preprocessing(dtype="uint8"))
    assert info.value.kind == "too_large"
    message = str(info.value)
    assert f"{LIMIT_WIDTH}x{LIMIT_HEIGHT + 1} = 50,010,000 pixels" in message
    assert "the limit is 50,000,000" in message
