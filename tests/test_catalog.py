"""Tests for the model catalog (``accel_widgets.engine.models.catalog``).

The catalog is what a user picks from before anything is built, so these tests check the
facts they rely on: which models exist, their input size, classes and labels, the tensor names
old code still asks for, how pixels are prepared, and the error they read for a typo.
"""

from __future__ import annotations

import pytest

from accel_widgets.engine.models.catalog import (
    CATALOG,
    LEGACY_INPUT,
    RGB_MEANS,
    TORCH_MEAN,
    TORCH_STD,
    get_spec,
    list_specs,
)
from accel_widgets.errors import AccelError, CatalogError

BASES = ["resnet50", "resnet152", "densenet121", "vgg16", "ssd_vgg"]
CLASSIFIERS = ["resnet50", "resnet152", "densenet121", "vgg16"]
ALL_NAMES = [n for base in BASES for n in (base, f"quantized-{base}")]


def test_catalog_has_the_five_models_and_each_quantized_variant() -> None:
    assert sorted(CATALOG) == sorted(ALL_NAMES)
    assert [s.name for s in list_specs(include_quantized=False)] == BASES
    assert sorted(s.name for s in list_specs()) == sorted(ALL_NAMES)


@pytest.mark.parametrize("base", BASES)
def test_quantized_variant_is_the_same_model_at_int8(base: str) -> None:
    float_spec, int8_spec = get_spec(base), get_spec(f"quantized-{base}")
    assert (float_spec.quantized, float_spec.precision) == (False, "fp32")
    assert (int8_spec.quantized, int8_spec.precision) == (True, "int8")
    assert int8_spec.base_name == float_spec.base_name == base
    assert int8_spec.title == f"{float_spec.title} (INT8)"
    assert int8_spec.file_mb == float_spec.int8_mb < float_spec.file_mb == float_spec.fp32_mb
    for same in ("input_size", "num_classes", "labels", "legacy_outputs", "weights_mode"):
        assert getattr(int8_spec, same) == getattr(float_spec, same)
    assert int8_spec.preprocessing() == float_spec.preprocessing()


@pytest.mark.parametrize("name", [n for c in CLASSIFIERS for n in (c, f"quantized-{c}")])
def test_classifiers_take_224_pixels_and_give_1000_imagenet_classes(name: str) -> None:
    spec = get_spec(name)
    assert spec.task == "classification"
    assert spec.input_size == 224
    assert spec.num_classes == 1000
    assert spec.labels == "imagenet"
    assert spec.resize == "short_side_crop"
    assert spec.short_side == 256


@pytest.mark.parametrize("name", ["ssd_vgg", "quantized-ssd_vgg"])
def test_ssd_vgg_takes_300_pixels_and_detects_21_voc_classes(name: str) -> None:
    spec = get_spec(name)
    assert spec.task == "detection"
    assert spec.input_size == 300
    assert spec.resize == "stretch"
    assert spec.num_classes == 21
    assert spec.labels == "voc"
    assert spec.extra["num_anchors"] == 8432
    grids, per_cell = spec.extra["grids"], spec.extra["anchors_per_cell"]
    assert sum(g * g * a for g, a in zip(grids, per_cell, strict=True)) == 8432
    assert spec.graph_ready  # built, decoded and served since issue 13 (engine/models/ssd.py)
    assert "in the graph" in spec.notes


@pytest.mark.parametrize(
    ("typed", "name"),
    [
        ("ResNet50", "resnet50"),
        ("RESNET152", "resnet152"),
        ("  DenseNet121 ", "densenet121"),
        ("Quantized-VGG16", "quantized-vgg16"),
        ("QuantizedResnet50", "quantized-resnet50"),
        ("QuantizedResnet152", "quantized-resnet152"),
        ("QuantizedDensenet121", "quantized-densenet121"),
        ("QuantizedVgg16", "quantized-vgg16"),
        ("QuantizedSsdVgg", "quantized-ssd_vgg"),
        ("SsdVgg", "ssd_vgg"),
        ("SSD-VGG", "ssd_vgg"),
    ],
)
def test_names_are_case_insensitive_and_accept_the_original_sdk_spellings(
    typed: str, name: str
) -> None:
    assert get_spec(typed).name == name
    assert get_spec(typed) is CATALOG[name]


def test_a_catalog_entry_handed_down_is_used_as_it_is() -> None:
    """Steps pass the entry they hold (issue 23: records travel down the walk); a custom
    entry (another input size) must not be swapped for the catalog's own of that name."""
    import dataclasses

    custom = dataclasses.replace(CATALOG["resnet50"], input_size=256)
    assert get_spec(custom) is custom
    assert get_spec(CATALOG["densenet121"]) is CATALOG["densenet121"]


@pytest.mark.parametrize("typo", ["resnet51", "inception_v3", ""])
def test_unknown_model_lists_every_catalog_name(typo: str) -> None:
    with pytest.raises(CatalogError) as info:
        get_spec(typo)
    message = str(info.value)
    assert f"unknown model {typo!r}" in message
    for name in ALL_NAMES:
        assert name in message
    assert "register it" in message
    assert isinstance(info.value, AccelError)


@pytest.mark.parametrize("name", ["resnet50", "resnet152", "vgg16", "ssd_vgg"])
def test_caffe_models_subtract_rgb_means_and_flip_to_bgr(name: str) -> None:
    graph = get_spec(name).preprocessing()["graph"]
    assert graph["mean"] == (123.68, 116.779, 103.939) == RGB_MEANS
    assert graph["std"] == (1.0, 1.0, 1.0)
    assert graph["scale"] == 1.0
    assert graph["to_bgr"] is True


def test_densenet_uses_torch_mean_and_std_after_scaling_to_0_1() -> None:
    graph = get_spec("densenet121").preprocessing()["graph"]
    assert graph["mean"] == (0.485, 0.456, 0.406) == TORCH_MEAN
    assert graph["std"] == (0.229, 0.224, 0.225) == TORCH_STD
    assert graph["scale"] == pytest.approx(1 / 255)
    assert graph["to_bgr"] is False


@pytest.mark.parametrize("name", ALL_NAMES)
def test_server_side_preprocessing_hands_the_model_rgb_nhwc_float_pixels(name: str) -> None:
    spec = get_spec(name)
    server = spec.preprocessing()["server"]
    assert server == {
        "size": spec.input_size,
        "resize": spec.resize,
        "short_side": spec.short_side,
        "channel_order": "RGB",
        "layout": "NHWC",
        "dtype": "float32",
    }


def test_resnet50_keeps_the_legacy_tensor_names() -> None:
    spec = get_spec("resnet50")
    assert "classifier/resnet_v1_50/predictions/Softmax:0" in spec.legacy_outputs
    assert spec.to_dict()["legacy_input"] == LEGACY_INPUT == "Placeholder:0"


def test_ssd_vgg_legacy_outputs_cover_every_feature_map_twice() -> None:
    outputs = get_spec("ssd_vgg").legacy_outputs
    assert len(outputs) == len(set(outputs)) == 12
    assert "ssd_300_vgg/block4_box/Reshape:0" in outputs
    assert "ssd_300_vgg/block11_box/Reshape_1:0" in outputs


@pytest.mark.parametrize("name", ALL_NAMES)
def test_to_dict_describes_the_model_for_the_widgets(name: str) -> None:
    spec = get_spec(name)
    info = spec.to_dict()
    assert info["name"] == name
    assert info["precision"] == spec.precision
    assert info["input_size"] == spec.input_size
    assert info["num_classes"] == spec.num_classes
    assert info["legacy_outputs"] == list(spec.legacy_outputs)
    assert info["preprocessing"] == spec.preprocessing()


def test_int8_latency_is_reported_only_where_measured() -> None:
    assert get_spec("quantized-resnet50").expected_latency_ms == 38
    assert get_spec("resnet50").expected_latency_ms == 45
    assert get_spec("quantized-vgg16").expected_latency_ms is None
