"""What every deployment target shares (engine/targets/base.py), as callers meet it.

The sidebar and the Deploy widget build their forms from ``describe()``, the command line
its flags from each setting; a refusal names the setting and what the target takes; a
service beyond loopback never runs without a key; a remote target pulls only what was
pushed. Each test states one of these facts on the registered targets.
"""

from __future__ import annotations

import dataclasses
import socket
import time
from pathlib import Path

import pytest
from pinned_support import colour_config, inprocess_server

from accel_widgets.engine.store.workspace import ArtifactRecord, ImageRecord, ServiceRecord
from accel_widgets.engine.targets import get_target
from accel_widgets.engine.targets.base import (
    RUNTIME_SETTING,
    Setting,
    check_exposure,
    free_port,
    health_state,
    idle_timeout,
    port_free,
    pushed_reference,
    same_settings,
)
from accel_widgets.errors import ServingError
from accel_widgets.serving.config import RUNTIMES


def test_a_setting_is_a_command_line_flag_with_dashes():
    assert Setting("ready_timeout", float, 60.0, "seconds").flag == "--ready-timeout"
    assert RUNTIME_SETTING.flag == "--runtime"


def test_describe_offers_the_form_a_widget_builds():
    described = get_target("local").describe()
    assert described["name"] == "local" and described["capacity"] == "local"
    assert described["needs_image"] is False
    by_name = {s["name"]: s for s in described["settings"]}
    assert by_name["runtime"] == {
        "name": "runtime",
        "type": "str",
        "default": "auto",
        "help": RUNTIME_SETTING.help,
        "choices": list(RUNTIMES),
    }
    assert by_name["auth"]["type"] == "bool" and by_name["auth"]["default"] is None
    kubernetes = get_target("kubernetes").describe()
    assert kubernetes["needs_image"] is True
    names = [s["name"] for s in kubernetes["settings"]]
    assert "headless" in names and "key" not in names  # ui=False stays with Python callers
    assert names == [s.name for s in get_target("kubernetes").settings if s.ui]


def test_settings_are_coerced_or_refused_in_their_own_words():
    local = get_target("local")
    resolved = local.resolve({"port": "8600", "runtime": "onnxruntime"})
    assert resolved["port"] == 8600 and resolved["runtime"] == "onnxruntime"
    with pytest.raises(ServingError) as refused:
        local.resolve({"runtime": "fastest"})
    assert str(refused.value) == (
        "setting runtime='fastest' of the local target must be one of auto, onnxruntime, openvino"
    )
    with pytest.raises(ServingError) as refused:
        local.resolve({"port": "eighty"})
    port = local.setting("port")
    assert str(refused.value) == (
        f"setting port='eighty' of the local target must be a int: {port.help}"
    )
    # A Python-only setting (a preset key) is passed on as it is.
    assert get_target("kubernetes").resolve({"key": "k-123"})["key"] == "k-123"


def test_unknown_settings_name_what_the_target_takes():
    local = get_target("local")
    offered = ", ".join(s.name for s in local.settings)
    with pytest.raises(ServingError) as refused:
        local.resolve({"replicas": 2, "gpu": 1, "port": None})
    assert str(refused.value) == (
        f"the local target has no setting gpu, replicas; its settings: {offered}"
    )
    with pytest.raises(ServingError) as refused:
        local.setting("replicas")
    assert (
        str(refused.value) == f"the local target has no setting replicas; its settings: {offered}"
    )


def test_a_target_without_settings_says_none():
    class Bare(type(get_target("local"))):
        name = "bare"
        settings = ()

    with pytest.raises(ServingError) as refused:
        Bare().resolve({"port": 1})
    assert str(refused.value) == "the bare target has no setting port; its settings: none"


def test_only_declarative_targets_write_manifests():
    with pytest.raises(ServingError) as refused:
        get_target("local").manifests(None, None, "m", image=None, settings={})
    assert str(refused.value) == (
        "the local target creates no manifests; targets that do: kubernetes, kserve"
    )


@pytest.mark.parametrize(
    ("host", "auth", "needs_key"),
    [
        ("127.0.0.1", None, False),
        ("localhost", None, False),
        ("::1", None, False),
        ("127.0.0.1", True, True),
        ("127.0.0.1", False, False),
        ("0.0.0.0", None, True),
        ("10.1.2.3", True, True),
    ],
)
def test_a_key_is_needed_beyond_loopback_and_whenever_asked(host, auth, needs_key):
    assert check_exposure(host, auth) is needs_key


def test_auth_off_beyond_loopback_is_refused_with_the_two_ways_out():
    with pytest.raises(ServingError) as refused:
        check_exposure("0.0.0.0", False)
    assert str(refused.value) == (
        "a service bound to 0.0.0.0 is reachable from other machines: keep authentication "
        "on (auth=True), or bind to 127.0.0.1"
    )


def _image(pushed: list[str]) -> ImageRecord:
    return ImageRecord(
        id=1,
        name="cats",
        version=3,
        artifact_id=1,
        path=Path("/nowhere"),
        info={"tag": "accel-widgets/cats:3", "pushed": [{"ref": r} for r in pushed]},
        created_at=0.0,
    )


def test_a_remote_target_pulls_the_newest_push_or_the_reference_named():
    pushed = _image(["127.0.0.1:5000/a/cats:3", "127.0.0.1:5000/b/cats:3"])
    assert pushed_reference(pushed) == "127.0.0.1:5000/b/cats:3"
    assert pushed_reference(pushed, "registry.example/x/cats:3") == "registry.example/x/cats:3"
    assert pushed_reference(pushed, "accel-widgets/cats:3") == "127.0.0.1:5000/b/cats:3"
    assert pushed_reference(pushed, "cats:3") == "127.0.0.1:5000/b/cats:3"
    with pytest.raises(ServingError) as refused:
        pushed_reference(_image([]))
    assert str(refused.value) == (
        "image cats:3 (accel-widgets/cats:3) was never pushed, and a remote target cannot pull "
        "from this machine: push it first (`accel-widgets package MODEL --name cats --push "
        "REGISTRY/PATH`), then deploy with --image REGISTRY/PATH/cats:3"
    )


@pytest.mark.parametrize("host", ["127.0.0.1", "::1"])
def test_a_port_is_free_until_something_listens_on_it(host):
    port = free_port(host)
    assert port_free(host, port)
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as holder:
        holder.bind((host, port))
        holder.listen()
        assert not port_free(host, port)
    assert port_free(host, port)


def _service(port: int, key: str | None = None) -> ServiceRecord:
    return ServiceRecord(
        id=1,
        name="colours",
        artifact_id=1,
        image_id=None,
        target="local",
        address="127.0.0.1",
        port=port,
        pid=None,
        key=key,
        state="running",
        log_path=None,
    )


def test_health_is_running_only_when_the_service_says_serving(tmp_path):
    with inprocess_server(colour_config(tmp_path), keys=("k-1",)) as server:
        assert health_state(_service(server.port, "k-1")) == "running"
        assert health_state(_service(server.port)) == "running"  # probes need no key
        server.health.set_serving(False)
        assert health_state(_service(server.port, "k-1")) == "unhealthy"
    assert health_state(_service(free_port()), timeout=0.5) == "unhealthy"


# -- a deploy of a recorded name: same settings or not -------------------------------------------


def _recorded(**info) -> ServiceRecord:
    """A local service on 127.0.0.1:9000 without a key, deployed with ``info``'s settings."""
    return ServiceRecord(
        id=1,
        name="colours",
        artifact_id=1,
        image_id=None,
        target="local",
        address="127.0.0.1",
        port=9000,
        pid=None,
        key=None,
        state="running",
        log_path=None,
        info=info,
    )


def test_a_deploy_asks_for_the_same_service_unless_a_setting_it_names_differs():
    """A second deploy of a running name swaps in place only when what it asks for is what
    runs: the address and port it listens on (0 or None: any port), a key or none (None:
    the target decides), TLS on or off, and every other setting as recorded; the key itself
    and the ready time-out never make two deploys different."""
    service = _recorded(settings={"runtime": "onnxruntime", "replicas": 2}, tls=False)
    assert same_settings(service, {})
    assert same_settings(service, {"host": "127.0.0.1", "port": 9000, "auth": False})
    assert same_settings(service, {"port": 0}) and same_settings(service, {"port": None})
    assert not same_settings(service, {"port": 9001})
    assert not same_settings(service, {"host": "0.0.0.0"})
    assert same_settings(service, {"auth": None})
    assert not same_settings(service, {"auth": True})
    assert same_settings(service, {"tls": False}) and same_settings(service, {"tls": None})
    assert not same_settings(service, {"tls": True})
    assert same_settings(service, {"runtime": "onnxruntime", "replicas": 2})
    assert same_settings(service, {"runtime": None})
    assert not same_settings(service, {"runtime": "openvino"})
    assert not same_settings(service, {"replicas": 3})
    assert not same_settings(service, {"host": "127.0.0.1", "replicas": 3})  # any one differs
    assert not same_settings(service, {"idle_timeout": 60.0})  # not recorded: not the same
    assert same_settings(service, {"key": "another", "ready_timeout": 5.0})
    keyed = dataclasses.replace(service, key="k", info={"tls": True})
    assert same_settings(keyed, {"auth": True, "tls": True})
    assert not same_settings(keyed, {"auth": False})
    assert not same_settings(keyed, {"tls": False})
    hashed = dataclasses.replace(service, key_hash="sha256:abc")  # the key file unreadable
    assert same_settings(hashed, {"auth": True})


# -- the idle time-out and defaults from the environment ----------------------------------------


def test_the_idle_time_out_is_the_setting_else_the_rooms_default_else_never(monkeypatch):
    monkeypatch.delenv("ACCEL_WIDGETS_IDLE_TIMEOUT", raising=False)
    assert idle_timeout({}, "local") == 0.0
    assert idle_timeout({"idle_timeout": None}, "local") == 0.0
    assert idle_timeout({"idle_timeout": 0}, "local") == 0.0
    assert idle_timeout({"idle_timeout": "90"}, "local") == 90.0
    monkeypatch.setenv("ACCEL_WIDGETS_IDLE_TIMEOUT", "600")
    assert idle_timeout({"idle_timeout": None}, "local") == 600.0
    assert idle_timeout({"idle_timeout": 30}, "local") == 30.0  # the setting wins
    monkeypatch.setenv("ACCEL_WIDGETS_IDLE_TIMEOUT", "soon")
    with pytest.raises(ServingError) as refused:
        idle_timeout({}, "local")
    assert str(refused.value) == (
        "ACCEL_WIDGETS_IDLE_TIMEOUT must be a number of seconds; got 'soon'"
    )
    for value in (-1, "-0.5", float("nan")):
        with pytest.raises(ServingError) as refused:
            idle_timeout({"idle_timeout": value}, "container")
        assert str(refused.value) == (
            "setting idle_timeout of the container target must be 0 (never) or more seconds; "
            f"got {value!r}"
        )
    with pytest.raises(ServingError) as refused:
        idle_timeout({"idle_timeout": [1]}, "local")
    assert str(refused.value) == (
        "setting idle_timeout of the local target must be a number of seconds; got [1]"
    )


def test_a_default_from_the_environment_is_read_as_the_settings_type(monkeypatch):
    setting = Setting("idle_timeout", float, None, "help", env="ROOM_IDLE")
    monkeypatch.delenv("ROOM_IDLE", raising=False)
    assert setting.current_default() is None
    monkeypatch.setenv("ROOM_IDLE", "  ")
    assert setting.current_default() is None  # blank is unset
    monkeypatch.setenv("ROOM_IDLE", " 300 ")
    assert setting.current_default() == 300.0 and isinstance(setting.current_default(), float)
    monkeypatch.setenv("ROOM_IDLE", "five minutes")
    assert setting.current_default() == "five minutes"  # shown as text; the deploy refuses it
    plain = Setting("idle_timeout", float, 7.0, "help")
    assert plain.current_default() == 7.0


def test_the_newest_of_several_pushes_is_pulled_and_the_push_command_names_the_model():
    three = _image([f"127.0.0.1:5000/{p}/cats:3" for p in ("a", "b", "c")])
    assert pushed_reference(three) == "127.0.0.1:5000/c/cats:3"
    never = dataclasses.replace(_image([]), info={"tag": "accel-widgets/cats:3"})  # no list
    artifact = ArtifactRecord(
        id=1,
        model_id=1,
        model_name="tabby",
        model_version=2,
        precision="int8",
        format="onnx",
        path=Path("/nowhere"),
        size_bytes=0,
        report={},
        created_at=0.0,
    )
    with pytest.raises(ServingError) as refused:
        pushed_reference(never, artifact=artifact)
    assert "(`accel-widgets package tabby --version 2 --precision int8 --name cats --push " in (
        str(refused.value)
    )


def test_describe_gives_each_targets_title_and_description():
    for target in (get_target("local"), get_target("kubernetes")):
        described = target.describe()
        assert (described["title"], described["description"]) == (
            target.title,
            target.description,
        )
        assert described["title"] and described["description"]


def test_a_free_port_is_one_the_kernel_hands_out_not_a_fixed_one():
    """Port 0 asks the kernel for a free ephemeral port: never a well-known one a deploy
    would collide on (or need root for)."""
    low, high = (int(n) for n in Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split())
    for host in ("127.0.0.1", "::1"):
        assert low <= free_port(host) <= high


def test_a_python_only_setting_reaches_the_target_as_given():
    """``ui=False`` settings come from Python callers (an azure-identity credential, a TLS
    pair): passed on as the very object given, never converted or refused."""
    credential = object()
    resolved = get_target("azureml").resolve({"credential": credential})
    assert resolved["credential"] is credential


def test_the_key_and_time_out_are_skipped_not_the_end_of_the_comparison():
    service = _recorded(settings={"runtime": "onnxruntime"})
    assert not same_settings(service, {"key": "k", "ready_timeout": 5.0, "runtime": "openvino"})
    assert same_settings(service, {"ready_timeout": 5.0, "runtime": "onnxruntime"})


def test_a_record_without_settings_is_the_same_only_where_nothing_is_asked():
    """A service recorded before settings were kept: any setting asked for differs."""
    older = _recorded()
    assert same_settings(older, {"runtime": None, "port": 0})
    assert not same_settings(older, {"runtime": "onnxruntime"})


def test_health_of_a_port_that_never_answers_is_unhealthy_within_the_time_out():
    """A hung service (the port accepts, nothing speaks gRPC) must not hang the sidebar's
    status column: the check gives up after its time-out."""
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        started = time.monotonic()
        assert health_state(_service(silent.getsockname()[1]), timeout=0.5) == "unhealthy"
        assert time.monotonic() - started < 5.0
