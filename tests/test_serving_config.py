"""The server config file, key files, metrics text and the exposure rule, without a server."""

from __future__ import annotations

import json

import pytest
from serving_fixtures import squeezenet_model

from accel_widgets.errors import ServingError
from accel_widgets.preprocess import Preprocessing
from accel_widgets.serving.auth import KeyChecker, load_keys
from accel_widgets.serving.config import ServerConfig
from accel_widgets.serving.metrics import Metrics
from accel_widgets.serving.server import is_loopback
from accel_widgets.serving.status import RequestError


def test_config_round_trips_through_write_and_load(tmp_path):
    config = ServerConfig.from_dict({"models": [squeezenet_model()], "max_batch": 8})
    path = config.write(tmp_path / "deploy" / "config.json")
    loaded = ServerConfig.load(path)
    assert loaded == config
    assert loaded.default_model == "squeezenet"
    assert loaded.models[0].preprocessing == Preprocessing(
        channel_order="BGR", mean=(104.0, 117.0, 123.0), layout="NCHW", dtype="float16"
    )
    assert loaded.models[0].outputs[0].names == ("classifier/squeezenet/predictions/Softmax:0",)


def test_relative_paths_are_relative_to_the_config_file(tmp_path):
    path = tmp_path / "c.json"
    path.write_text(json.dumps({"models": [{"name": "m", "onnx": "models/m.onnx"}]}))
    assert ServerConfig.load(path).models[0].onnx == tmp_path / "models" / "m.onnx"


@pytest.mark.parametrize(
    ("patch", "words"),
    [
        ({"models": []}, "models must be a non-empty list"),
        ({"default_model": "other"}, "default_model 'other' is not one of the models: squeezenet"),
        ({"api_key_file": "/k"}, "unknown key(s) api_key_file"),
        ({"max_message_mb": 0}, "max_message_mb must be an integer from 1"),
        ({"threads": "4"}, "threads must be an integer"),
        ({"spinning": "no"}, "spinning must be true or false; got 'no'"),
        ({"tls": {"cert": "c.pem"}}, "tls: missing key(s) key"),
    ],
)
def test_bad_server_keys_are_named(patch, words):
    data = {"models": [squeezenet_model()], **patch}
    with pytest.raises(ServingError) as info:
        ServerConfig.from_dict(data)
    assert words in str(info.value)


@pytest.mark.parametrize(
    ("patch", "words"),
    [
        ({"name": "Has Space"}, "models[0].name 'Has Space' must start with a letter"),
        ({"precision": "int4"}, "models[0].precision must be one of fp32, fp16, int8"),
        ({"preprocessing": {"layout": "HWC"}}, "models[0].preprocessing: Preprocessing.layout"),
        ({"outputs": [{"alias": "a"}]}, "models[0].outputs[0]: missing key(s) onnx_output"),
        (
            {"outputs": [{"alias": "a", "onnx_output": "o", "postprocess": "sigmoid"}]},
            "postprocess must be one of none, flatten, softmax",
        ),
        ({"input_names": "Placeholder:0"}, "models[0].input_names must be a list"),
    ],
)
def test_bad_model_entries_are_named(patch, words):
    with pytest.raises(ServingError) as info:
        ServerConfig.from_dict({"models": [squeezenet_model(**patch)]})
    assert words in str(info.value)


def test_duplicate_model_names_are_refused():
    with pytest.raises(ServingError, match="duplicate model name"):
        ServerConfig.from_dict({"models": [squeezenet_model(), squeezenet_model()]})


def test_load_names_the_file(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(ServingError, match=r"bad\.json is not valid JSON"):
        ServerConfig.load(bad)
    with pytest.raises(ServingError, match="does not exist"):
        ServerConfig.load(tmp_path / "missing.json")


def test_key_file_skips_comments_and_blank_lines(tmp_path):
    path = tmp_path / "keys"
    path.write_text("# comment\nabc\n\n  def  \n")
    path.chmod(0o600)
    assert load_keys(path) == (b"abc", b"def")
    path.write_text("# only a comment\n")
    with pytest.raises(ServingError, match="holds no key"):
        load_keys(path)


def test_key_checker_accepts_bearer_and_bare_keys_only():
    checker = KeyChecker((b"k1", b"k2"))
    checker.check("Bearer k2")
    checker.check("k1")
    for bad in (None, "", "Bearer nope", "Basic k1"):
        with pytest.raises(RequestError) as info:
            checker.check(bad)
        assert info.value.code == "UNAUTHENTICATED"
    KeyChecker().check(None)  # no keys configured: open


def test_metrics_render_prometheus_text():
    from prometheus_client.parser import text_string_to_metric_families

    metrics = Metrics()
    metrics.observe("m", "grpc", "OK", 0.004)
    metrics.observe("m", "grpc", "INVALID_ARGUMENT", 0.2)
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(metrics.render())
        for s in family.samples
    }
    ok = (("code", "OK"), ("model", "m"), ("protocol", "grpc"))
    bad = (("code", "INVALID_ARGUMENT"), ("model", "m"), ("protocol", "grpc"))
    assert samples[("accel_widgets_requests_total", ok)] == 1
    assert (
        samples[
            ("accel_widgets_request_errors_total", (("code", "INVALID_ARGUMENT"), ("model", "m")))
        ]
        == 1
    )
    assert (
        samples[
            ("accel_widgets_request_duration_seconds_bucket", (*ok[:1], ("le", "0.005"), *ok[1:]))
        ]
        == 1
    )
    assert (
        samples[
            ("accel_widgets_request_duration_seconds_bucket", (*bad[:1], ("le", "0.005"), *bad[1:]))
        ]
        == 0
    )
    assert (
        samples[
            ("accel_widgets_request_duration_seconds_bucket", (*bad[:1], ("le", "+Inf"), *bad[1:]))
        ]
        == 1
    )
    assert samples[("accel_widgets_request_duration_seconds_count", ok)] == 1


@pytest.mark.parametrize(
    ("host", "loopback"),
    [
        ("127.0.0.1", True),
        ("localhost", True),
        ("::1", True),
        ("127.0.0.2", True),
        ("0.0.0.0", False),
        ("::", False),
        ("10.0.0.5", False),
        ("myhost", False),
    ],
)
def test_only_loopback_counts_as_private(host, loopback):
    assert is_loopback(host) is loopback


def test_spinning_is_on_unless_the_config_turns_it_off(tmp_path):
    """A shared, busy machine turns spinning off in the config; the server's session obeys."""
    from accel_widgets.serving.runtime import session_options

    assert ServerConfig.from_dict({"models": [squeezenet_model()]}).spinning is True
    config = ServerConfig.from_dict({"models": [squeezenet_model()], "spinning": False})
    assert not config.spinning
    again = ServerConfig.load(config.write(tmp_path / "c.json"))
    assert again.spinning is False
    options = session_options(spinning=again.spinning)
    assert options.get_session_config_entry("session.intra_op.allow_spinning") == "0"
    assert session_options().get_session_config_entry("session.intra_op.allow_spinning") == "1"
