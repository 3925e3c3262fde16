"""The train walk, like the main walk, falls back to random weights when ImageNet weights
cannot be had, and says so in the words of its own controls.

The tests run offline (``ACCEL_WIDGETS_OFFLINE``, set by conftest) with ``KERAS_HOME`` at a
fresh folder: a new machine with no Keras download, as in a workshop room without network.
Nothing is trained: the step's choice and its refusal are what a user sees first.
"""

from __future__ import annotations

import pytest

from accel_widgets.engine.models.catalog import get_spec
from accel_widgets.engine.store.workspace import Workspace
from accel_widgets.widgets.train import TrainWalk, TrainWidget


@pytest.fixture
def keras_home(tmp_path, monkeypatch):
    home = tmp_path / "keras"
    monkeypatch.setenv("KERAS_HOME", str(home))
    return home


def test_offline_the_step_opens_on_random_weights_and_says_why(keras_home, tmp_path):
    walk = TrainWalk(Workspace(tmp_path / "workspace"), source="digits")  # default: ImageNet
    try:
        step = walk.train
        assert step.weights.value == "random"
        note = step.weights_note.value
        assert "ImageNet weights for ResNet-50 cannot be had here" in note
        assert "<b>random (offline)</b>" in note and "<b>ImageNet (download once)</b>" in note
        assert "weights=" not in note and "--weights" not in note
        # Choosing ImageNet again is the user's call: the note about the step's choice goes.
        step.weights.value = "imagenet"
        assert step.weights_note.value == ""
    finally:
        walk.close()


def test_imagenet_chosen_offline_is_refused_at_once_in_the_steps_words(keras_home):
    step = TrainWidget(source="digits", weights="random")
    step.weights.value = "imagenet"
    assert step.run() is None
    assert "ImageNet weights for ResNet-50 cannot be had here" in step.error
    assert "Choose 'random (offline)' in the weights list" in step.error
    assert str(keras_home / "models") in step.error
    assert get_spec("resnet50").keras_weights_file in step.error
    assert 'weights="random"' not in step.error and "--weights" not in step.error
    assert step.model is None and not step.done


def test_with_the_weights_in_the_keras_cache_imagenet_stays(keras_home):
    """The check is real: the same step keeps ImageNet when Keras already has the file."""
    models = keras_home / "models"
    models.mkdir(parents=True)
    (models / get_spec("resnet50").keras_weights_file).write_bytes(b"weights")
    step = TrainWidget(source="digits")
    assert step.weights.value == "imagenet"
    assert step.weights_note.value == ""
