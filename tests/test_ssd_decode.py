"""SSD300-VGG without a served model: anchors, decode + NMS against NumPy, agreement,
weights files by layer name, and boxes drawn on the photo (checked on the pixels)."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from accel_widgets.engine.clients.detection import Detection, detections_from_outputs
from accel_widgets.engine.conversion.ssd_convert import detection_agreement
from accel_widgets.engine.models.catalog import get_spec
from accel_widgets.engine.models.ssd_anchors import FEATURE_MAPS, NUM_ANCHORS, anchors
from accel_widgets.engine.models.ssd_decode import NUM_CLASSES, detect_numpy


def _random_maps(seed: int, batch: int = 2, hot: float = 0.04):
    """Raw maps in the original shapes: noise logits, and a ``hot`` share of anchors with one
    class raised by 2..6, so scores above 0.5 spread out (distinct, not all near 1)."""
    rng = np.random.default_rng(seed)
    locations, logits = [], []
    for m in FEATURE_MAPS:
        shape = (batch, m.grid, m.grid, m.anchors_per_cell)
        locations.append(rng.normal(0, 1, (*shape, 4)).astype(np.float32))
        raw = rng.normal(0, 1, (*shape, NUM_CLASSES))
        boost = (rng.random(shape) < hot) * rng.uniform(2, 6, shape)
        raw += np.eye(NUM_CLASSES)[rng.integers(1, NUM_CLASSES, shape)] * boost[..., None]
        logits.append(raw.astype(np.float32))
    return locations, logits


def test_anchor_layout_is_the_azure_models():
    spec = get_spec("ssd_vgg")
    assert [m.grid for m in FEATURE_MAPS] == list(spec.extra["grids"]) == [37, 19, 10, 5, 3, 1]
    assert [m.anchors_per_cell for m in FEATURE_MAPS] == [4, 6, 6, 6, 4, 4]
    assert NUM_ANCHORS == spec.extra["num_anchors"] == 8432
    boxes = anchors()
    assert boxes.shape == (8432, 4)
    # First cell of the 37x37 map: centre 4/300, then a 21-pixel square box first.
    assert boxes[0] == pytest.approx([4 / 300, 4 / 300, 21 / 300, 21 / 300])
    assert boxes[1, 2] == pytest.approx(np.sqrt(21 * 45) / 300)
    # The last anchor is the 1x1 map's, centred on the image.
    assert boxes[-1, :2] == pytest.approx([0.5, 0.5])
    # Raw-tensor order: map, row, column, anchor (row 0, column 1 comes after 4 anchors).
    assert boxes[4, 0] == pytest.approx(4 / 300) and boxes[4, 1] == pytest.approx(12 / 300)


def test_graph_decode_and_nms_match_the_numpy_reference():
    tf = pytest.importorskip("tensorflow")
    from accel_widgets.engine.models.ssd_decode import detect_tf

    locations, logits = _random_maps(seed=7)
    graph = detect_tf(tf, [tf.constant(t) for t in locations], [tf.constant(t) for t in logits])
    graph = {k: v.numpy() for k, v in graph.items()}
    reference = detect_numpy(locations, logits)
    assert graph["num_detections"].tolist() == [len(r["classes"]) for r in reference]
    for row, ref in enumerate(reference):
        count = len(ref["classes"])
        assert 20 < count <= 400  # the check means something: many boxes, NMS at work
        np.testing.assert_allclose(graph["detection_boxes"][row, :count], ref["boxes"], atol=1e-5)
        np.testing.assert_array_equal(graph["detection_classes"][row, :count], ref["classes"])
        np.testing.assert_allclose(graph["detection_scores"][row, :count], ref["scores"], atol=1e-5)
        assert not graph["detection_boxes"][row, count:].any()  # padding of the shorter image
    assert (reference[0]["boxes"] >= 0).all() and (reference[0]["boxes"] <= 1).all()


def test_numpy_nms_keeps_the_best_of_overlapping_boxes_per_class_only():
    locations, logits = _random_maps(seed=1, batch=1)
    logits = [np.zeros_like(t) for t in logits]  # every score 1/21: nothing found
    assert len(detect_numpy(locations, logits)[0]["classes"]) == 0
    # Two anchors of one cell (same centre, heavy overlap) both say "cat" (8); a third says dog.
    logits[0][0, 10, 10, 0, 8] = 9.0
    logits[0][0, 10, 10, 1, 8] = 8.0
    logits[0][0, 10, 10, 2, 12] = 8.5
    found = detect_numpy(locations, logits)[0]
    assert found["classes"].tolist() == [8, 12]  # the weaker cat box was suppressed
    assert found["scores"][0] > found["scores"][1]


def test_agreement_matches_boxes_of_the_same_class_at_iou_one_half():
    def out(boxes, classes, scores):
        return {
            "detection_boxes": np.array([boxes], np.float32).reshape(1, -1, 4),
            "detection_classes": np.array([classes], np.float32),
            "detection_scores": np.array([scores], np.float32),
            "num_detections": np.array([len(classes)], np.float32),
        }

    ref = out([[0.1, 0.1, 0.5, 0.5], [0.6, 0.6, 0.9, 0.9]], [8, 15], [0.9, 0.8])
    moved = out([[0.12, 0.1, 0.52, 0.5], [0.6, 0.6, 0.9, 0.9]], [8, 12], [0.88, 0.8])
    result = detection_agreement([ref], [moved])
    assert result["recall"] == 0.5 and result["precision"] == 0.5  # the person became a dog
    assert result["top1_agree_count"] == 0
    assert detection_agreement([ref], [ref])["top1_agree_count"] == 1


def test_detections_from_served_outputs_are_labelled_best_first():
    outputs = {
        "detection_boxes": np.array([[0.1, 0.2, 0.5, 0.6], [0.3, 0.3, 0.4, 0.4]], np.float32),
        "detection_classes": np.array([15.0, 8.0], np.float32),
        "detection_scores": np.array([0.9, 0.6], np.float32),
        "num_detections": np.array(2.0, np.float32),
    }
    labels = ["background", *[f"c{i}" for i in range(1, 21)]]
    labels[8], labels[15] = "cat", "person"
    found = detections_from_outputs(outputs, labels)
    assert [(d.label, d.class_id) for d in found] == [("person", 15), ("cat", 8)]
    assert found[0].box == pytest.approx((0.1, 0.2, 0.5, 0.6))
    assert found[0].pixel_box(101, 201) == (20, 20, 60, 100)


def _components(mask: np.ndarray) -> int:
    from scipy import ndimage

    return int(ndimage.label(mask, structure=np.ones((3, 3)))[1])


def test_drawing_puts_one_coloured_labelled_box_per_detection_on_the_photo():
    from accel_widgets.widgets.detections import class_colour, draw_detections

    grey = Image.new("RGB", (400, 300), (128, 128, 128))
    buffer = io.BytesIO()
    grey.save(buffer, format="PNG")
    detections = [
        Detection(8, "cat", 0.91, (0.15, 0.05, 0.45, 0.30)),
        Detection(12, "dog", 0.77, (0.20, 0.55, 0.60, 0.95)),
        Detection(15, "person", 0.55, (0.65, 0.10, 0.95, 0.45)),
    ]
    drawn = np.asarray(Image.open(io.BytesIO(draw_detections(buffer.getvalue(), detections))))
    assert drawn.shape == (300, 400, 3)
    changed = np.any(drawn != 128, axis=-1)
    assert _components(changed) == len(detections)  # N boxes (each with its label) for N
    for d in detections:
        colour = np.array(class_colour(d.class_id))
        left, top, _, bottom = d.pixel_box(400, 300)
        # The box's left edge is drawn in its class colour at mid-height.
        assert (drawn[(top + bottom) // 2, left] == colour).all()
        # The label on the top edge has dark text pixels on the colour.
        strip = drawn[max(0, top - 20) : top, left : left + 40]
        assert (strip.sum(axis=-1) < 100).any()
    # No detections: the photo is unchanged.
    empty = np.asarray(Image.open(io.BytesIO(draw_detections(buffer.getvalue(), []))))
    assert (empty == 128).all()


@pytest.fixture(scope="module")
def network():
    pytest.importorskip("tensorflow")
    from accel_widgets.engine.models.ssd import build_network

    return build_network()


def test_weights_file_round_trips_by_layer_name(network, tmp_path):
    from accel_widgets.engine.models.ssd import LAYER_NAMES, load_weights, save_weights

    assert {layer.name for layer in network.layers if layer.weights} == set(LAYER_NAMES)
    path = save_weights(network, tmp_path / "ssd300.h5")
    layer = network.get_layer("block9_box_conf")
    before = [w.copy() for w in layer.get_weights()]
    layer.set_weights([np.zeros_like(w) for w in before])
    load_weights(network, path)
    for got, want in zip(layer.get_weights(), before, strict=True):
        np.testing.assert_array_equal(got, want)


def test_weights_file_of_another_layout_names_every_mismatching_layer(network, tmp_path):
    import keras

    from accel_widgets.engine.models.ssd import load_weights, save_weights
    from accel_widgets.errors import WeightsError

    # A 38x38-style file: block1_conv1 with 32 filters, VOC heads of another anchor count,
    # an fc8 layer SSD has none of, and no L2 norm layer.
    inputs = keras.Input((300, 300, 3))
    x = keras.layers.Conv2D(32, 3, name="block1_conv1")(inputs)
    x = keras.layers.Conv2D(3 * 21, 3, name="block4_box_conf")(x)
    x = keras.layers.Dense(10, name="fc8")(x)
    other = keras.Model(inputs, x)
    path = save_weights(other, tmp_path / "other.h5")
    before = network.get_layer("block1_conv1").get_weights()[0].copy()
    with pytest.raises(WeightsError) as caught:
        load_weights(network, path)
    message = str(caught.value)
    assert "block1_conv1 (file [(3, 3, 3, 32), (32,)]" in message
    assert "block4_box_conf (file" in message
    assert "in the file but not in SSD300-VGG: fc8" in message
    assert "missing from the file:" in message and "block4_norm" in message
    # Nothing was half-loaded.
    np.testing.assert_array_equal(network.get_layer("block1_conv1").get_weights()[0], before)


def test_weights_choices_are_refused_in_the_callers_words(tmp_path):
    from accel_widgets.engine.models.ssd import create_network
    from accel_widgets.errors import WeightsError

    with pytest.raises(WeightsError, match=r"does not exist.*'random'"):
        create_network(tmp_path / "nope.h5")
    not_h5 = tmp_path / "weights.h5"
    not_h5.write_text("not hdf5")
    with pytest.raises(WeightsError, match="not an HDF5 file"):
        create_network(not_h5)
    with pytest.raises(WeightsError, match="ImageNet weights are not on this machine"):
        create_network("imagenet")
