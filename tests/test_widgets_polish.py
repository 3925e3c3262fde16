"""The walk's polish (issue 25), checked at the widget level: what a user saw on screen, read
from the widgets' values without a browser. What shows only on screen (wrapping, a dialog,
a dirty tab) is in the browser tests.

Each test names the defect it guards; each fails on the code before its fix.
"""

from __future__ import annotations

import html
import json
import re
from pathlib import Path

import docker.errors
import pytest

from accel_widgets.engine.build import _offline_error
from accel_widgets.engine.catalog import get_spec
from accel_widgets.engine.choices import get_choice
from accel_widgets.engine.cleanup import cleanup_plan
from accel_widgets.engine.known_files import SAMPLE_PREPROCESSING
from accel_widgets.engine.notebooks import bundled_notebook, copy_template
from accel_widgets.engine.package import _docker_reason, pull_error_words
from accel_widgets.progress import ProgressEvent
from accel_widgets.sizes import mb_text
from accel_widgets.widgets import (
    CleanupWidget,
    ConvertWidget,
    DeployWidget,
    ModelWidget,
    QuotaWidget,
    ScoreWidget,
    TrainWalk,
)
from accel_widgets.widgets.base import ProgressPanel, Step, error_text
from accel_widgets.widgets.charts import histogram_figure, latency_histogram
from accel_widgets.widgets.score import image_error_words
from accel_widgets.widgets.walkthrough import VOILA_GUIDE, Walkthrough


def text(value: str) -> str:
    """What the browser shows for an HTML value (tags dropped)."""
    return re.sub(r"\s+", " ", html.unescape(re.sub(r"<[^>]+>", " ", value))).strip()


def squeezenet(workspace, weights_dir):
    from accel_widgets.engine.prepare import prepare_onnx

    model, _, _ = prepare_onnx(
        weights_dir / "SqueezeNet_fp16.onnx",
        "squeezenet",
        preprocessing=SAMPLE_PREPROCESSING,
        workspace=workspace,
    )
    return model


# -- 1. the Model step ------------------------------------------------------------------------


def test_model_step_lists_each_model_once_and_shows_int8_figures_for_int8():
    """Item 1: "ResNet-50" and "ResNet-50 (INT8)" beside a precision toggle; fp32 figures
    ("102 MB, about 45 ms") after choosing INT8; no word on DenseNet INT8's latency."""
    step = ModelWidget(model="squeezenet")
    labels = [label for label, _ in step.choice.options]
    assert not [label for label in labels if "(INT8)" in label], labels
    step.choice.value = "resnet50"
    assert "102 MB" in step.facts.value and "about 45 ms" in step.facts.value
    step.precision.value = "int8"
    resnet = get_spec("resnet50")
    assert f"{resnet.int8_mb} MB as INT8" in step.facts.value
    assert f"about {resnet.latency_ms_int8} ms" in step.facts.value
    assert "102 MB" not in step.facts.value
    step.choice.value = "densenet121"
    assert "9 MB as INT8" in step.facts.value
    assert "no catalog estimate for INT8" in step.facts.value
    # An INT8 catalog name asked for (a notebook parameter) opens on its float model + INT8.
    asked = ModelWidget(model="quantized-resnet152")
    assert (asked.choice.value, asked.precision.value) == ("resnet152", "int8")


# -- 2. old logs and names ------------------------------------------------------------------------


def test_convert_drops_the_last_models_log_when_the_model_changes():
    """Item 2: "Choose a model above." beside the previous model's log and green bar."""
    step = ConvertWidget()
    step.selection = {"choice": get_choice("resnet50"), "weights": "random", "quantize": None}
    step.progress(ProgressEvent("convert", 1.0, "converted resnet50"))
    assert step.progress.log_text and step.progress.log_box.layout.display == ""
    step.selection = None
    assert "Choose a model above" in step.summary.value
    assert step.progress.log_text == "" and step.progress.log_box.layout.display == "none"
    assert step.progress._bar_box.children == ()


def test_deploy_name_and_log_follow_the_model(workspace, weights_dir):
    """Item 2: Deploy kept the old log, and "squeezenet" as the service name once another
    model was chosen (not converted yet)."""
    step = DeployWidget(workspace=workspace)
    step.model = squeezenet(workspace, weights_dir)
    assert step.service_name.value == "squeezenet"
    step.progress(ProgressEvent("deploy", 1.0, "squeezenet ready on 127.0.0.1:9000 in 1.7 s"))
    step.model = None  # another model chosen above: nothing to deploy yet
    assert step.service_name.value == ""
    assert step.progress.log_text == ""
    step.service_name.value = "mine"
    step.progress(ProgressEvent("deploy", 0.5, "a line"))
    step.service_name.value = "mine-2"  # a new name: a new deploy to come
    assert step.progress.log_text == ""
    step.model = squeezenet(workspace, weights_dir)
    assert step.service_name.value == "mine-2", "a name the user typed is kept"


# -- 3. an upload ---------------------------------------------------------------------------------


def test_an_upload_takes_the_old_result_off_the_screen():
    """Item 3: choosing "yours: notimage.jpg" kept the cat and "Top 5 for cat (chelsea)"."""
    step = ScoreWidget()
    step.picture.value = b"\xff\xd8cat"
    step.top5.value = "<table><caption>Top 5 for <b>cat (chelsea)</b></caption></table>"
    step.latency.value = "12.0 ms"
    step.result = object()
    step.use_image(b"this is not an image", "notimage.jpg")
    assert step.sample.value == "__uploaded__"
    assert (step.picture.value, step.top5.value, step.latency.value) == (b"", "", "")
    assert step.result is None
    # Another photo from the list does the same.
    step.top5.value = "<table>Top 5 for yours</table>"
    step.result = object()
    step.sample.value = "coffee"
    assert step.top5.value == "" and step.result is None


# -- 4. step marks --------------------------------------------------------------------------------


def test_a_step_locked_again_drops_its_stale_error_and_cross():
    """Item 4: after the service was stopped, the locked Score step kept its red error and ✗."""
    step = Step([])
    step.title = "6. Score"
    step.error = "the service squeezenet is not running any more; deploy it again"
    assert "&#10007;" in step.header.value
    step.locked = True
    assert step.error == "" and "&#10007;" not in step.header.value
    assert "Finish the step above first" in step.lock_hint.value


def test_clean_up_is_checked_only_once_a_delete_left_nothing(workspace, weights_dir):
    """Item 4: "7. Clean up ✓" while items remained, before anything was cleaned."""
    squeezenet(workspace, weights_dir)
    step = CleanupWidget(workspace=workspace)
    step.refresh()
    assert step.items and not step.done
    assert "&#10003;" not in step.header.value
    step.delete(step.items[0])
    assert not step.error, step.error
    assert cleanup_plan(workspace) == []
    assert step.done and "&#10003;" in step.header.value


# -- 5. errors in the caller's words ----------------------------------------------------------


def test_a_failed_pull_says_what_docker_said_and_names_the_widgets_field():
    """Item 5: the Package step printed `http+docker://localhost/v1.41/images/create?...`
    and advised "--base local/debian-py:bookworm" beside its "base image" field."""
    error = docker.errors.APIError(
        "500 Server Error for http+docker://localhost/v1.41/images/create?tag=3.11&fromImage="
        "python: Internal Server Error",
        explanation="Get https://registry-1.docker.io/v2/: dial tcp: lookup registry-1.docker.io"
        ": no such host",
    )
    reason = _docker_reason(error)
    assert "http+docker" not in reason and "no such host" in reason
    widget = pull_error_words("python:3.11", reason, base_setting="base image")
    assert 'in the "base image" field' in widget and "--base" not in widget
    cli = pull_error_words("python:3.11", reason)
    assert "--base local/debian-py:bookworm" in cli
    # Without an explanation, the URL goes and the status stays.
    bare = _docker_reason(docker.errors.APIError("404 Client Error for http+docker://x/y: Nope"))
    assert "http+docker" not in bare and "Nope" in bare


def test_an_upload_error_reads_as_words_not_a_bytes_literal():
    """Item 5: "first bytes b'this is not an i'" on screen."""
    said = image_error_words(
        "[INVALID_ARGUMENT] the bytes are not a JPEG or PNG image: first bytes b'this is not an "
        "i' (19 bytes in all)"
    )
    assert said.startswith("the bytes are not") and "b'" not in said
    assert 'it starts with the text "this is not an i..."' in said
    binary = image_error_words("first bytes b'\\x00\\x01\\x02GIF' (9 bytes in all)")
    assert "it starts with the bytes 00 01 02 47 49 46" in binary


def test_a_widget_tells_offline_users_about_its_weights_control(tmp_path):
    """Item 5: the train walk told a widget user to pass `weights="random"`."""
    error = _offline_error(get_spec("resnet50"), tmp_path / "resnet50.h5")
    shown = error_text(error)
    assert 'weights="random"' not in shown and "--weights" not in shown
    assert 'random weights in the "weights" control' in shown
    assert 'weights="random"' in str(error)  # code still gets the argument's words


# -- 7. Voila ------------------------------------------------------------------------------------


def test_notebook_only_text_is_left_out_of_voila_and_the_walk_says_it_there(workspace, monkeypatch):
    """Item 7: "Run > Run All Cells", "restarting the kernel", "RUN_ALL = True",
    "walkthrough-code.ipynb beside this notebook" on a Voila page."""
    shown = [
        "".join(c["source"])
        for name in ("walkthrough.ipynb", "train-your-own.ipynb")
        for c in json.loads(bundled_notebook(name).read_text())["cells"]
        if c["cell_type"] == "markdown"
        and not c["metadata"].get("transient", {}).get("remove_source")
    ]
    for words in ("Run All", "kernel", "RUN_ALL", "beside this notebook"):
        assert not [s for s in shown if words in s], f"Voila shows {words!r}"
    assert Walkthrough(workspace=workspace, poll=None).guide.value == ""
    monkeypatch.setenv("SERVER_SOFTWARE", "voila/0.5.13")
    walk = Walkthrough(workspace=workspace, poll=None)
    assert walk.guide.value == VOILA_GUIDE and "Reloading this page" in text(walk.guide.value)
    assert walk.children[-1] is walk.guide


# -- 8. charts -------------------------------------------------------------------------------------


def test_the_p99_line_never_crosses_the_legend():
    """Item 8: the p99 line ran through the legend text; text is drawn as text (sharp)."""
    latencies = [5.0 + 0.01 * i for i in range(99)] + [9.9]
    figure = histogram_figure(latencies, 5.5, 9.9)
    figure.draw_without_rendering()
    axes = figure.axes[0].get_window_extent()
    legend = figure.legends[0].get_window_extent()
    assert legend.y0 >= axes.y1 - 0.5, (legend, axes)  # above the plot, not over it
    svg = latency_histogram(latencies, 5.5, 9.9).decode()
    assert "p99 9.9 ms" in svg  # a <text> element, not glyph outlines


# -- 9. log boxes ---------------------------------------------------------------------------------


def test_the_log_wraps_and_starts_at_its_last_line():
    """Item 9: a horizontal scrollbar even when lines fit; the box stayed at its first line."""
    panel = ProgressPanel()
    for i in range(30):
        panel(ProgressEvent("convert", i / 30, f"pass {i}: " + "x" * 150))
    value = panel.log_box.value
    assert "white-space:pre-wrap" in value and "overflow-x:hidden" in value
    assert "flex-direction:column-reverse" in value  # scrolled to its end as lines arrive
    assert panel.log_text.splitlines()[-1].endswith("pass 29: " + "x" * 150)


# -- 10. the train walk ---------------------------------------------------------------------------


def test_the_train_walk_is_numbered_and_shows_its_own_pictures(workspace):
    """Item 10: headings "Train your own classes", "Convert", then "5. Deploy"; the drop-down
    cut; counts without pictures; the digits model offered the cat and the espresso."""
    walk = TrainWalk(workspace=workspace, weights="random", per_class=5)
    try:
        assert [s.title for s in walk.steps] == [
            "1. Train",
            "2. Convert",
            "3. Deploy",
            "4. Score",
            "5. Clean up",
        ]
        assert walk.train.source.layout.width == "30em"
        assert list(walk.score.sample.options) == [], "no ImageNet photos for a digits model"
        counts = walk.train.look()
        assert counts and len(counts) == 10
        shown = walk.train.classes_table.value
        assert shown.count("class='accel-class-example'") == 40  # 4 pictures of each digit
    finally:
        walk.close()


# -- 11. small things -----------------------------------------------------------------------------


def test_one_size_format_one_ready_time_styled_copy_and_one_row_targets(workspace, weights_dir):
    """Item 11: "493.5 MB" vs "493 MB", "2.4 MB" vs "2 MB"; three ready times; a bare native
    copy button; capacity targets on two rows."""
    assert (mb_text(2.37), mb_text(493.5), mb_text(102)) == ("2.4 MB", "494 MB", "102 MB")
    squeezenet(workspace, weights_dir)
    model_row = next(i for i in cleanup_plan(workspace) if i.kind == "model")
    assert "fp16 2.4 MB" in model_row.detail
    assert "2.4 MB" in ModelWidget(model="squeezenet").choice.options[0][0]
    assert QuotaWidget().target.style.button_width == "auto"
    step = DeployWidget(workspace=workspace)
    step.model = workspace.get_model("squeezenet")
    service = step.run()
    try:
        assert service is not None, step.error
        ready = f"{service.info['ready_seconds']:.1f} s"
        assert step.status.endswith(f"(ready in {ready})")
        assert f"<td style='padding:2px 8px'>{ready}</td>" in step.details.value
        assert "class='accel-copy jupyter-button'" in step.details.value
    finally:
        from accel_widgets.engine.targets import delete_service

        delete_service(service.name, workspace)


def test_a_users_copy_of_a_notebook_opens_without_changes(tmp_path):
    """Item 11: the notebook tab showed unsaved changes right after opening (the kernel's
    language_info, written on start, differed from the copy's)."""
    from ipykernel.ipkernel import IPythonKernel

    path, created = copy_template("walkthrough.ipynb", tmp_path)
    assert created
    metadata = json.loads(Path(path).read_text())["metadata"]
    assert metadata["language_info"] == IPythonKernel.language_info


@pytest.fixture(autouse=True)
def _no_voila(monkeypatch):
    """These tests run in no Voila page unless one says so."""
    monkeypatch.delenv("SERVER_SOFTWARE", raising=False)
    monkeypatch.delenv("VOILA_KERNEL_ID", raising=False)
