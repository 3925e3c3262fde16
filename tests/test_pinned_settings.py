"""Yes/no target settings read the way a person writes them, or are refused.

A setting can arrive as text: a plugin's or a notebook's mapping, a form, an environment
variable. ``bool("false")`` is True in Python, so ``auth="false"`` read naively would turn
authentication *on* where the user asked for it off, and ``"off"`` would do the same. Every
yes/no setting of every registered target takes true/yes/on/1 and false/no/off/0 (any case,
spaces around), real booleans as they are, and refuses anything else naming the setting.
The end-to-end tests deploy a real model with ``auth`` given as text and look at what
a client meets.
"""

from __future__ import annotations

import numpy as np
import pytest
from pinned_support import colour_model, png

from accel_widgets.engine.clients.grpc_client import client_from_service
from accel_widgets.engine.models.register import register_onnx
from accel_widgets.engine.targets import delete_service, deploy, get_target, targets
from accel_widgets.errors import ScoringError, ServingError

YES = ["true", "True", "TRUE", "yes", "on", "1", " on "]
NO = ["false", "False", "FALSE", "no", "off", "0", " off "]
NEITHER = ["maybe", "", "2", "-1", "falsy", "nein", "t", "f"]

BOOL_SETTINGS = [
    (target.name, setting.name)
    for target in targets()
    for setting in target.settings
    if setting.type is bool and setting.ui
]


def test_every_built_in_target_with_yes_no_settings_is_checked():
    found = {name for name, _ in BOOL_SETTINGS}
    assert {"local", "container", "kubernetes", "kserve"} <= found
    assert ("kubernetes", "headless") in BOOL_SETTINGS


@pytest.mark.parametrize(("target", "setting"), BOOL_SETTINGS)
def test_yes_no_spellings_are_read_as_meant(target, setting):
    chosen = get_target(target)
    for text in YES:
        assert chosen.resolve({setting: text})[setting] is True, text
    for text in NO:
        assert chosen.resolve({setting: text})[setting] is False, text
    for value, meant in ((True, True), (False, False), (1, True), (0, False)):
        assert chosen.resolve({setting: value})[setting] is meant


@pytest.mark.parametrize(("target", "setting"), BOOL_SETTINGS)
def test_anything_else_is_refused_naming_the_setting(target, setting):
    chosen = get_target(target)
    for text in NEITHER:
        with pytest.raises(ServingError) as refused:
            chosen.resolve({setting: text})
        message = str(refused.value)
        assert f"setting {setting}={text!r} of the {target} target must be a bool" in message


@pytest.fixture(scope="module")
def colours(tmp_path_factory):
    """A workspace with a tiny real model registered (its own folder, module-wide)."""
    from accel_widgets.engine.store.workspace import Workspace

    folder = tmp_path_factory.mktemp("pinned-settings")
    workspace = Workspace(folder / "workspace")
    register_onnx(
        colour_model(folder / "colours.onnx"), "colours", labels=None, workspace=workspace
    )
    return workspace


def test_auth_given_as_false_deploys_without_a_key(colours):
    service = deploy("colours", name="open", auth="false", workspace=colours)
    try:
        assert service.key is None
        with client_from_service(service) as client:
            scores = client.score_image(png((255, 0, 0)))
        assert int(np.argmax(scores)) == 0  # red
    finally:
        delete_service("open", colours)


def test_auth_given_as_on_deploys_with_a_key_a_client_must_send(colours):
    import dataclasses

    service = deploy("colours", name="keyed", auth="on", workspace=colours)
    try:
        assert service.key
        no_key = dataclasses.replace(service, key=None)
        with client_from_service(no_key) as client, pytest.raises(ScoringError) as refused:
            client.score_image(png())
        assert refused.value.code == "UNAUTHENTICATED"
    finally:
        delete_service("keyed", colours)


def test_auth_given_as_maybe_is_refused_before_anything_starts(colours):
    with pytest.raises(ServingError, match="setting auth='maybe' of the local target"):
        deploy("colours", name="unsure", auth="maybe", workspace=colours)
    assert [s.name for s in colours.list_services()] == []
