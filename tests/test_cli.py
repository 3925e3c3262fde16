"""The `accel-widgets` command as a user types it (in-process `main`, and one real subprocess)."""

from __future__ import annotations

import subprocess
import sys

import pytest

from accel_widgets.cli import main
from accel_widgets.engine.models.catalog import CATALOG


def run(workspace, *args: str) -> int:
    return main(["--workspace", str(workspace.root), *args])


def test_models_lists_the_whole_catalog_one_line_each(workspace, capsys):
    assert run(workspace, "models") == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 2 + len(CATALOG)  # header, rule, one line a model
    body = "\n".join(lines)
    for name in CATALOG:
        assert name in body
    assert "ssd_vgg" in body and "(spec only)" not in body  # every catalog model builds


def test_models_answers_without_loading_tensorflow(tmp_path):
    code = (
        "import sys; from accel_widgets.cli import main; main(['models']); "
        "assert 'tensorflow' not in sys.modules, 'models imported TensorFlow'"
    )
    done = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=60,
        env={"ACCEL_WIDGETS_WORKSPACE": str(tmp_path), "PATH": "/usr/bin:/bin"},
    )
    assert done.returncode == 0, done.stderr
    assert "resnet50" in done.stdout


def test_local_quota_prints_rows_and_per_model_verdicts(workspace, capsys):
    code = run(workspace, "quota", "--target", "local")
    out = capsys.readouterr().out
    assert code in (0, 1)
    for word in ("cores", "memory", "disk", "vgg16", "fits here"):
        assert word in out
    assert ("ENOUGH:" in out) == (code == 0)


def test_list_on_an_empty_workspace_says_what_to_do(workspace, capsys):
    assert run(workspace, "list") == 0
    assert "accel-widgets convert resnet50" in capsys.readouterr().out


def test_register_then_list_shows_the_model_and_its_artifact(workspace, weights_dir, capsys):
    code = run(
        workspace,
        "register",
        str(weights_dir / "SqueezeNet_fp16.onnx"),
        "squeezenet",
        "--preprocessing",
        '{"channel_order": "BGR"}',
    )
    assert code == 0
    assert "registered squeezenet:1 (onnx)" in capsys.readouterr().out
    assert run(workspace, "list") == 0
    out = capsys.readouterr().out
    assert "squeezenet:1" in out and "fp16" in out


def test_bad_preprocessing_json_field_is_named(workspace, weights_dir, capsys):
    code = run(
        workspace,
        "register",
        str(weights_dir / "SqueezeNet_fp16.onnx"),
        "squeezenet",
        "--preprocessing",
        '{"channel_order": "BRG"}',
    )
    assert code == 1
    err = capsys.readouterr().err
    assert "channel_order" in err and "RGB" in err and "BGR" in err
    assert workspace.list_models() == []


def test_delete_of_an_unknown_model_names_it(workspace, capsys):
    assert run(workspace, "delete", "model", "nothing-here") == 1
    assert "no model 'nothing-here'" in capsys.readouterr().err


def test_no_command_prints_help_and_exits_2(capsys):
    assert main([]) == 2
    assert "convert" in capsys.readouterr().out


def test_unknown_command_is_a_usage_error():
    with pytest.raises(SystemExit) as caught:
        main(["deplyo"])
    assert caught.value.code == 2


def test_quota_takes_the_chosen_targets_settings_and_refuses_others(workspace, capsys):
    code = main(["--workspace", str(workspace.root), "quota", "--target", "container"])
    assert code == 0  # the container target runs here: this machine's capacity
    assert "memory" in capsys.readouterr().out
    code = main(
        ["--workspace", str(workspace.root), "quota", "--target", "local", "--replicas", "2"]
    )
    assert code == 1
    assert "--replicas is not a setting of the local target" in capsys.readouterr().err


class _Terminal(__import__("io").StringIO):
    """stderr as a terminal: the progress line is redrawn in place, with no newline."""

    def isatty(self) -> bool:
        return True


def test_an_error_mid_step_prints_on_a_line_of_its_own_and_ctrl_c_sets_the_token(
    monkeypatch,
):
    """A step that fails while its progress line is drawn: the line is closed before the
    error is printed (``error:`` at the start of a line, not glued to ``[####   ] 50%``),
    and Ctrl-C inside a step sets the token the engine watches, so it cleans up."""
    from accel_widgets.cli.output import live_progress
    from accel_widgets.errors import AccelError
    from accel_widgets.progress import ProgressEvent

    terminal = _Terminal()
    monkeypatch.setattr(sys, "stderr", terminal)
    with pytest.raises(AccelError), live_progress() as (progress, _):
        progress(ProgressEvent("convert", 0.5, "halfway"))
        raise AccelError("the model file is not ONNX")
    assert "halfway" in terminal.getvalue() and terminal.getvalue().endswith("\n")

    with pytest.raises(KeyboardInterrupt), live_progress() as (progress, cancel):
        progress(ProgressEvent("package", 0.2, "building"))
        raise KeyboardInterrupt
    assert cancel.cancelled


def test_register_of_a_file_that_is_not_a_model_says_so_on_its_own_line(
    workspace, tmp_path, monkeypatch
):
    """The whole command: the error line starts at the beginning of a line."""
    bad = tmp_path / "photo.onnx"
    bad.write_bytes(b"\xff\xd8\xff not an onnx file")
    terminal = _Terminal()
    monkeypatch.setattr(sys, "stderr", terminal)
    assert run(workspace, "register", str(bad), "mine") == 1
    text = terminal.getvalue()
    assert "checking photo.onnx" in text  # the progress line was drawn...
    assert "\nerror: " in text and "is not a valid ONNX model" in text  # ...and closed first
    assert workspace.list_models() == []
