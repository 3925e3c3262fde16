"""The server's runtimes: ONNX Runtime and OpenVINO agree, ``auto`` records its choice, and
GPU asks on a CPU-only machine fall back to the CPU with the reason in the service's info.

Real models throughout: the shared SqueezeNet (fp16, real weights) on the sample photos, the
shared MobileNetV2 INT8 (QLinear ops that OpenVINO cannot read), a real server process for
the ready file. No GPU exists here, so the GPU paths are driven with ONNX Runtime's and
OpenVINO's real device lists (a GPU build's list is passed where one is needed).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
from serving_fixtures import (
    CAT_CLASSES,
    ESPRESSO,
    ROOT,
    jpeg_bytes,
    running_server,
    squeezenet_model,
    weights_path,
    write_config,
)

from accel_widgets.engine.clients.grpc_client import PredictionClient
from accel_widgets.errors import ServingError
from accel_widgets.serving import openvino_runtime, runtime
from accel_widgets.serving.config import ServerConfig
from accel_widgets.serving.model import LoadedModel

pytest.importorskip("openvino")

PHOTOS = ("chelsea", "coffee", "astronaut", "rocket")
TORCH_NORM = {"scale": 1 / 255, "mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225]}


def load(model: dict, **server: object) -> LoadedModel:
    config = ServerConfig.from_dict({"models": [model], **server})
    return LoadedModel.load(
        config.models[0],
        threads=None,
        max_pixels=config.max_pixels,
        max_batch=config.max_batch,
        runtime_name=config.runtime,
        device=config.device,
        batching=config.batching,
    )


def mobilenet_int8() -> dict:
    """The shared MobileNetV2 INT8 (ONNX Model Zoo, QLinear ops, logits) as a config model."""
    return {
        "name": "mobilenet",
        "onnx": str(weights_path() / "mobilenetv2-12-int8.onnx"),
        "precision": "int8",
        "preprocessing": {**TORCH_NORM, "layout": "NCHW"},
        "outputs": [{"alias": "output_alias", "onnx_output": "output", "postprocess": "softmax"}],
    }


@pytest.fixture(scope="module")
def photos() -> list[bytes]:
    return [jpeg_bytes(name) for name in PHOTOS]


def test_both_runtimes_give_the_same_top5_on_the_photos(photos):
    scores = {}
    for name in ("onnxruntime", "openvino"):
        model = load(squeezenet_model(), runtime=name)
        assert model.runtime_info.runtime == name
        assert model.runtime_info.chosen_by == "asked for in the config"
        scores[name] = model.predict("images", photos, [])["output_alias"]
    ort_scores, ov_scores = scores["onnxruntime"], scores["openvino"]
    assert int(ort_scores[0].argmax()) in CAT_CLASSES and int(ort_scores[1].argmax()) == ESPRESSO
    for row, photo in enumerate(PHOTOS):
        ort_top5 = list(np.argsort(-ort_scores[row])[:5])
        ov_top5 = list(np.argsort(-ov_scores[row])[:5])
        # Same classes, same winner; fp16 weights computed in f32 (OpenVINO) vs fp16 kernels
        # (ONNX Runtime) may swap two near-equal neighbours, never bring in another class.
        assert ov_top5[0] == ort_top5[0], photo
        assert set(ov_top5) == set(ort_top5), (photo, ort_top5, ov_top5)
    assert np.abs(ort_scores - ov_scores).max() < 1e-2


def test_openvino_computes_in_f32_unless_bf16_was_validated():
    # This machine's CPU may well have bf16 (then OpenVINO's own default would be bf16).
    model = load(squeezenet_model(), runtime="openvino")
    assert model.runtime_info.inference_precision == "f32"
    hint = model.session._single.get_property("INFERENCE_PRECISION_HINT")
    assert str(hint).endswith("f32") or "float32" in str(hint), hint
    validated = load(squeezenet_model(bf16=True), runtime="openvino")
    expected = "bf16" if openvino_runtime.cpu_has_bf16() else "f32"
    assert validated.runtime_info.inference_precision == expected
    assert openvino_runtime.choose_precision(True, "CPU", has_bf16=False) == (
        "f32",
        "f32: bf16 validated, but this CPU has no AVX512-BF16 or AMX",
    )
    assert openvino_runtime.choose_precision(False, "CPU", has_bf16=True)[0] == "f32"
    # The engine sets "bf16" only from a validation that agreed on every photo.
    from accel_widgets.engine.packaging.service_config import bf16_validated

    assert bf16_validated({"bf16": {"top1_agreement": 1.0, "n_images": 6}})
    assert not bf16_validated({"bf16": {"top1_agreement": 5 / 6, "n_images": 6}})
    assert not bf16_validated({"vs_fp32": {"top1_agreement": 1.0, "n_images": 6}})


def test_auto_races_the_runtimes_and_the_ready_file_says_which_serves(tmp_path, photos):
    config = write_config(tmp_path, runtime="auto")
    with running_server(tmp_path, config) as server:
        info = server.info["runtimes"]["squeezenet"]
        with PredictionClient("127.0.0.1", server.port, timeout=30) as client:
            cat = client.score_image(photos[0], outputs="output_alias")
    assert info["asked"] == "auto"
    assert set(info["measured_ms"]) == {"onnxruntime", "openvino"}
    fastest = min(info["measured_ms"], key=info["measured_ms"].get)
    assert info["runtime"] == fastest
    assert "lower warm-up p50" in info["chosen_by"] and fastest in info["chosen_by"]
    assert int(np.asarray(cat).argmax()) in CAT_CLASSES


def _mapped(pid: int) -> str:
    """The shared libraries a process has mapped (what it loaded and keeps)."""
    with open(f"/proc/{pid}/maps") as maps:
        return maps.read()


def test_auto_races_in_a_child_so_the_server_keeps_only_the_winner(tmp_path, photos, monkeypatch):
    """The race runs in a child process and its verdict is kept: the server maps OpenVINO's
    libraries exactly when OpenVINO serves (in-process, the loser stayed mapped: 189 MB RSS
    for the sample against 128 MB with ONNX Runtime alone), and a second start reads the
    verdict instead of racing again."""
    cache = tmp_path / "runtime-cache"
    monkeypatch.setenv("ACCEL_WIDGETS_RUNTIME_CACHE", str(cache))
    config = write_config(tmp_path, runtime="auto")
    with running_server(tmp_path, config) as server:
        info = server.info["runtimes"]["squeezenet"]
        with PredictionClient("127.0.0.1", server.port, timeout=30) as client:
            cat = client.score_image(photos[0], outputs="output_alias")
        maps = _mapped(server.process.pid)
    assert set(info["measured_ms"]) == {"onnxruntime", "openvino"}
    assert info["runtime"] == min(info["measured_ms"], key=info["measured_ms"].get)
    assert ("libopenvino" in maps) == (info["runtime"] == "openvino")
    assert int(np.asarray(cat).argmax()) in CAT_CLASSES
    [verdict] = [json.loads(p.read_text()) for p in cache.glob("*.json")]
    assert verdict["winner"] == info["runtime"] and verdict["measured_ms"] == info["measured_ms"]

    with running_server(tmp_path, config) as again:
        second = again.info["runtimes"]["squeezenet"]
    assert second["runtime"] == info["runtime"] and second["measured_ms"] == info["measured_ms"]
    assert "and kept (runtime_race.py)" in second["chosen_by"]


def test_a_kept_onnx_runtime_verdict_loads_no_openvino_at_all(tmp_path, photos, monkeypatch):
    """With a verdict for ONNX Runtime on record, the server opens ONNX Runtime alone: no
    OpenVINO library in the process, the recorded figures in its ready file."""
    from accel_widgets.serving.runtime_race import RaceSettings, race_key

    cache = tmp_path / "runtime-cache"
    cache.mkdir()
    monkeypatch.setenv("ACCEL_WIDGETS_RUNTIME_CACHE", str(cache))
    config = write_config(tmp_path, runtime="auto")
    loaded = ServerConfig.load(config)
    settings = RaceSettings(
        loaded.threads,
        loaded.spinning,
        loaded.device,
        loaded.batching.max_batch_size if loaded.batching else 0,
        loaded.max_pixels,
        loaded.max_batch,
    )
    measured = {"onnxruntime": 4.2, "openvino": 8.4}
    (cache / f"{race_key(loaded.models[0], settings)}.json").write_text(
        json.dumps({"winner": "onnxruntime", "measured_ms": measured, "measured_at": 1.8e9})
    )
    with running_server(tmp_path, config) as server:
        info = server.info["runtimes"]["squeezenet"]
        with PredictionClient("127.0.0.1", server.port, timeout=30) as client:
            cat = client.score_image(photos[0], outputs="output_alias")
        maps = _mapped(server.process.pid)
    assert info["runtime"] == "onnxruntime" and info["measured_ms"] == measured
    assert "libopenvino" not in maps and "onnxruntime" in maps
    assert int(np.asarray(cat).argmax()) in CAT_CLASSES


def test_the_verdict_key_changes_with_the_model_file_and_the_settings(tmp_path):
    from accel_widgets.serving.runtime_race import RaceSettings, race_key

    first = ServerConfig.from_dict({"models": [squeezenet_model()]}).models[0]
    copy = tmp_path / "copy.onnx"
    copy.write_bytes(first.onnx.read_bytes())
    changed = tmp_path / "changed.onnx"
    changed.write_bytes(first.onnx.read_bytes() + b"\0")
    settings = RaceSettings(None, True, "auto", 0, 4096 * 4096, 8)
    key = race_key(first, settings)
    assert (
        race_key(
            ServerConfig.from_dict({"models": [{**squeezenet_model(), "onnx": str(copy)}]}).models[
                0
            ],
            settings,
        )
        == key
    )
    assert (
        race_key(
            ServerConfig.from_dict(
                {"models": [{**squeezenet_model(), "onnx": str(changed)}]}
            ).models[0],
            settings,
        )
        != key
    )
    assert race_key(first, RaceSettings(1, True, "auto", 0, 4096 * 4096, 8)) != key
    assert race_key(first, RaceSettings(None, True, "auto", 8, 4096 * 4096, 8)) != key


def test_auto_serves_with_onnx_runtime_what_openvino_cannot_read(photos):
    model = load(mobilenet_int8(), runtime="auto")
    info = model.runtime_info
    assert info.runtime == "onnxruntime" and info.measured_ms == {}
    assert info.chosen_by == "auto: the only runtime that can serve this model here"
    assert any("OpenVINO cannot read" in note for note in info.notes), info.notes
    assert int(model.predict("images", photos[1:2], [])["output_alias"][0].argmax()) == ESPRESSO
    with pytest.raises(ServingError, match=r"OpenVINO cannot read.*Choose runtime 'onnxruntime'"):
        load(mobilenet_int8(), runtime="openvino")


def test_without_openvino_auto_uses_onnx_runtime_and_openvino_says_how_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "openvino", None)  # import openvino -> ImportError
    monkeypatch.setattr(openvino_runtime, "_CORE", None)
    model = load(squeezenet_model(), runtime="auto")
    assert model.runtime_info.runtime == "onnxruntime"
    assert any("openvino is not installed" in n for n in model.runtime_info.notes)
    with pytest.raises(ServingError, match=r"pip install 'accel-widgets\[openvino\]'"):
        load(squeezenet_model(), runtime="openvino")


def test_gpu_providers_are_chosen_when_the_build_has_them():
    model = weights_path() / "SqueezeNet_fp16.onnx"
    gpu_build = ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"]
    chosen, note = runtime.providers(model, "int8", "gpu", gpu_build)
    assert [p if isinstance(p, str) else p[0] for p in chosen] == gpu_build and note is None
    trt_options = chosen[0][1]
    assert trt_options["trt_int8_enable"] == "True" and trt_options["trt_fp16_enable"] == "False"
    assert runtime.providers(model, "fp32", "auto", gpu_build)[0][1:] == [
        "CUDAExecutionProvider",
        "CPUExecutionProvider",
    ]
    assert runtime.providers(model, "fp32", "cpu", gpu_build) == (["CPUExecutionProvider"], None)
    assert openvino_runtime.choose_device("gpu", ["CPU", "GPU.0", "GPU.1"]) == ("GPU.0", None)
    assert openvino_runtime.choose_device("auto", ["CPU", "GPU"]) == ("CPU", None)


def test_a_gpu_asked_for_on_a_cpu_machine_serves_on_the_cpu_and_says_why():
    path = weights_path() / "SqueezeNet_fp16.onnx"
    # A build that lists CUDA but cannot start it here: ONNX Runtime drops it (and warns),
    # we record it.
    with pytest.warns(UserWarning, match="CUDAExecutionProvider"):
        session, note = runtime.open_onnxruntime(
            path,
            "fp16",
            device="gpu",
            available=["CUDAExecutionProvider", "CPUExecutionProvider"],
        )
    assert session.get_providers() == ["CPUExecutionProvider"]
    assert note and "could not start CUDAExecutionProvider" in note
    device, ov_note = openvino_runtime.choose_device("gpu", openvino_runtime.devices())
    assert device == "CPU" and "OpenVINO sees no GPU" in ov_note
    for name in ("onnxruntime", "openvino"):
        info = load(squeezenet_model(), runtime=name, device="gpu").runtime_info
        assert info.device == "CPU", info
        assert any(
            "device 'gpu' was asked for" in n and "serving on the CPU" in n for n in info.notes
        )


def test_runtime_device_and_batching_are_checked_in_the_config():
    for bad, message in (
        ({"runtime": "tensorrt"}, "runtime must be one of auto, onnxruntime, openvino"),
        ({"device": "tpu"}, "device must be one of auto, cpu, gpu"),
        ({"batching": {"max_batch": 8}}, "batching: unknown key"),
        ({"batching": {"max_batch_size": 0}}, "batching.max_batch_size must be an integer"),
    ):
        with pytest.raises(ServingError, match=message):
            ServerConfig.from_dict({"models": [squeezenet_model()], **bad})
    config = ServerConfig.from_dict(
        {"models": [squeezenet_model()], "runtime": "auto", "batching": {"max_batch_size": 4}}
    )
    again = ServerConfig.from_dict(json.loads(json.dumps(config.to_dict())))
    assert again == config and again.batching.max_queue_delay_us == 2000


def test_a_server_serving_with_openvino_imports_no_tensorflow_or_jupyter():
    code = (
        "import sys, json\n"
        f"sys.path.insert(0, {str(ROOT / 'tests')!r})\n"
        "from serving_fixtures import squeezenet_model\n"
        "from accel_widgets.serving.config import ServerConfig\n"
        "from accel_widgets.serving.model import LoadedModel\n"
        "c = ServerConfig.from_dict({'models': [squeezenet_model()]})\n"
        "m = LoadedModel.load(c.models[0], threads=None, max_pixels=c.max_pixels,"
        " max_batch=4, runtime_name='openvino')\n"
        "banned = ('tensorflow', 'tf2onnx', 'keras', 'ipywidgets', 'jupyter', 'jupyter_client',"
        " 'IPython', 'ipykernel', 'onnx')\n"
        "found = sorted(m for m in sys.modules if m.split('.')[0] in banned)\n"
        "assert not found, found\n"
        "assert 'openvino' in sys.modules\n"
        "print('clean')\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "clean" in result.stdout


def test_loading_openvino_forks_no_child_and_sends_no_usage_event(tmp_path):
    """``import openvino`` sends a usage event by forking a child from a thread
    (``openvino_telemetry``); in a server full of gRPC threads such a child once hung on a
    copied lock and outlived its server. The server loads OpenVINO without it.

    Run as on a user's machine: telemetry is off in CI (``CI=true``) and for users who opted
    out, so the child process has neither the CI variables nor a consent file in its home.
    Without the fix, ``openvino_telemetry`` is imported and one fork is counted.
    """
    code = (
        "import os, sys, time\n"
        f"sys.path.insert(0, {str(ROOT / 'tests')!r})\n"
        "forks = []\n"
        "os.register_at_fork(before=lambda: forks.append(1))\n"
        "from serving_fixtures import squeezenet_model\n"
        "from accel_widgets.serving.config import ServerConfig\n"
        "from accel_widgets.serving.model import LoadedModel\n"
        "c = ServerConfig.from_dict({'models': [squeezenet_model()], 'runtime': 'openvino'})\n"
        "m = LoadedModel.load(c.models[0], threads=None, max_pixels=c.max_pixels,"
        " max_batch=4, runtime_name='openvino')\n"
        "assert m.runtime_info.runtime == 'openvino', m.runtime_info\n"
        "time.sleep(1.0)  # the usage event is sent from a thread, after the import\n"
        "assert 'openvino_telemetry' not in sys.modules, 'the usage event was prepared'\n"
        "assert not forks, f'{len(forks)} fork(s)'\n"
        "print('no fork')\n"
    )
    env = {k: v for k, v in os.environ.items() if k not in ("CI", "TF_BUILD", "JENKINS_URL")}
    env["HOME"] = str(tmp_path)
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "no fork" in result.stdout


def test_cli_deploy_runtime_flag_and_the_deploy_form_offer_the_runtimes(workspace, capsys):
    from accel_widgets.cli import main
    from accel_widgets.engine.models.register import register_onnx
    from accel_widgets.engine.targets import delete_service, get_target
    from accel_widgets.widgets.deploy import setting_control

    register_onnx(
        weights_path() / "SqueezeNet_fp16.onnx",
        "squeezenet",
        workspace=workspace,
        preprocessing={"channel_order": "BGR", "layout": "NCHW", "dtype": "float16"},
    )
    control = setting_control(get_target("local").setting("runtime"))
    assert list(control.options) == ["auto", "onnxruntime", "openvino"] and control.value == "auto"
    root = str(workspace.root)
    assert main(["--workspace", root, "deploy", "squeezenet", "--runtime", "openvino"]) == 0
    try:
        service = workspace.list_services()[0]
        info = service.info["runtimes"]["squeezenet"]
        assert info["runtime"] == "openvino" and info["asked"] == "openvino"
        assert service.info["settings"]["runtime"] == "openvino"
    finally:
        delete_service(service.name, workspace=workspace)
    with pytest.raises(SystemExit):
        main(["--workspace", root, "deploy", "squeezenet", "--runtime", "tensorrt"])
    assert "invalid choice: 'tensorrt'" in capsys.readouterr().err


class _Session:
    """A stand-in runtime session for the race's own rules (timing and fairness)."""

    def __init__(self, delay: float, shape: tuple[int, ...] = (1, 10), value: float = 0.1):
        self.delay, self.shape, self.value, self.calls = delay, shape, value, 0

    def run(self) -> list[np.ndarray]:
        import time

        self.calls += 1
        time.sleep(self.delay)
        return [np.full(self.shape, self.value, np.float32)]


def _candidate(name: str, session: _Session):
    from accel_widgets.serving.runtime_choice import Candidate

    return Candidate(name, session, "CPU", "fp32")


def test_the_race_leaves_out_a_runtime_that_answers_something_else():
    """A faster runtime whose outputs have another shape, or NaN, does not win."""
    from accel_widgets.serving.runtime_choice import race

    for wrong in (_Session(0.0, shape=(1, 7)), _Session(0.0, value=float("nan"))):
        reference = _candidate("onnxruntime", _Session(0.005))
        notes: list[str] = []
        winner, measured = race(
            [reference, _candidate("openvino", wrong)], lambda s: s.run(), notes=notes
        )
        assert winner is reference and measured == {}
        assert len(notes) == 1 and notes[0].startswith("auto: openvino left out")


def test_the_race_keeps_to_its_budget_for_a_slow_model():
    """SSD-like runs (here 0.2 s each): one warm-up run, blocks of two, one round."""
    from accel_widgets.serving.runtime_choice import race

    slow, slower = _Session(0.2), _Session(0.3)
    winner, measured = race(
        [_candidate("onnxruntime", slow), _candidate("openvino", slower)],
        lambda s: s.run(),
        budget_s=1.0,
    )
    assert winner.runtime == "onnxruntime" and set(measured) == {"onnxruntime", "openvino"}
    assert slow.calls == 1 + 2 and slower.calls == 1 + 2
