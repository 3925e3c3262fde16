"""The idle time-out as a room sets it once: ``$ACCEL_WIDGETS_IDLE_TIMEOUT`` is what the
Deploy form shows and sends, what the CLI's help names, and a field edit still wins."""

from __future__ import annotations

import pytest

from accel_widgets.engine.targets import get_target
from accel_widgets.engine.targets.base import IDLE_TIMEOUT_SETTING, idle_timeout
from accel_widgets.errors import ServingError
from accel_widgets.widgets.deploy import setting_control, setting_value


@pytest.mark.parametrize("target", ["local", "container"])
def test_the_local_and_container_targets_offer_the_idle_time_out(target):
    assert IDLE_TIMEOUT_SETTING in get_target(target).settings


def test_the_deploy_form_shows_and_sends_the_rooms_default(monkeypatch):
    monkeypatch.delenv("ACCEL_WIDGETS_IDLE_TIMEOUT", raising=False)
    control = setting_control(IDLE_TIMEOUT_SETTING)
    assert control.value == 0.0 and setting_value(IDLE_TIMEOUT_SETTING, control) == 0.0

    monkeypatch.setenv("ACCEL_WIDGETS_IDLE_TIMEOUT", "900")
    control = setting_control(IDLE_TIMEOUT_SETTING)
    assert control.value == 900.0
    assert setting_value(IDLE_TIMEOUT_SETTING, control) == 900.0
    control.value = 60.0  # the participant's own choice wins
    assert (
        idle_timeout({"idle_timeout": setting_value(IDLE_TIMEOUT_SETTING, control)}, "local") == 60
    )


def test_an_unreadable_room_default_is_named_where_it_comes_from(monkeypatch):
    monkeypatch.setenv("ACCEL_WIDGETS_IDLE_TIMEOUT", "an hour")
    assert setting_control(IDLE_TIMEOUT_SETTING).value == 0.0  # the form does not guess
    with pytest.raises(ServingError, match="ACCEL_WIDGETS_IDLE_TIMEOUT must be a number"):
        idle_timeout({"idle_timeout": None}, "local")
    with pytest.raises(ServingError, match="idle_timeout of the container target must be 0"):
        idle_timeout({"idle_timeout": -1}, "container")
