"""The widgets, driven through their own API (values set, buttons clicked) like a user would.

Real engine underneath: the real SqueezeNet from the shared weights is registered, deployed as
a real server process and scores scikit-image's cat photo. Assertions read what the user sees:
status lines, table cells, chart images, error text.
"""

from __future__ import annotations

import html
import re
import time

import psutil
import pytest

from accel_widgets.engine.choices import model_choices
from accel_widgets.engine.reports import REPORT_COLUMNS
from accel_widgets.engine.targets import delete_service
from accel_widgets.progress import CancelToken, ProgressEvent, as_reporter
from accel_widgets.widgets import ModelWidget, QuotaWidget, ScoreWidget, Walkthrough
from accel_widgets.widgets.base import ProgressPanel, Step
from accel_widgets.widgets.charts import svg_size

CATS = {"Egyptian cat", "tabby", "tiger cat", "Persian cat", "Siamese cat", "lynx"}
CLICK_TIMEOUT_S = 300


def text(html_value: str) -> str:
    """What the browser shows for an HTML widget's value (tags dropped)."""
    flat = re.sub(r"<[^>]+>", "", re.sub(r"<(br|/tr|/td|/th|/p|/div)\b[^>]*>", " ", html_value))
    return re.sub(r"\s+", " ", html.unescape(flat)).strip()


def cells(html_value: str, row_class: str = "") -> list[list[str]]:
    """The body rows of an HTML table as lists of cell texts."""
    pattern = rf"<tr class='{row_class}'>(.*?)</tr>" if row_class else r"<tr[^>]*>(.*?)</tr>"
    rows = re.findall(pattern, html_value, flags=re.S)
    table = [[text(c) for c in re.findall(r"<td[^>]*>(.*?)</td>", r, flags=re.S)] for r in rows]
    return [row for row in table if row]  # the header row has <th> cells only


def click(step, button) -> None:
    """Click like a user, then wait for the background work the click started."""
    button.click()
    assert step.wait(CLICK_TIMEOUT_S), f"{step.title} still running after {CLICK_TIMEOUT_S} s"


@pytest.fixture
def walk(workspace, weights_dir):
    """A walkthrough on a fresh workspace; every service it started is stopped afterwards.

    No poll: the tests call ``walk.state.refresh()`` where the poll would have run.
    """
    walkthrough = Walkthrough(model="squeezenet", workspace=workspace, poll=None)
    yield walkthrough
    walkthrough.close()
    for service in workspace.list_services():
        delete_service(service.name, workspace)


def test_steps_open_in_order(walk):
    """Only the capacity step is open at first; each click opens the next step."""
    assert not walk.quota.locked
    assert all(step.locked for step in walk.steps[1:])
    assert walk.model.use_button.disabled and walk.convert.convert_button.disabled
    assert "Finish the step above first" in walk.model.lock_hint.value

    click(walk.quota, walk.quota.check_button)
    assert walk.quota.done and not walk.model.locked
    assert not walk.model.use_button.disabled
    assert walk.convert.locked  # still waiting for a model


def test_quota_shows_the_capacity_table_and_a_verdict(walk):
    click(walk.quota, walk.quota.check_button)
    rows = cells(walk.quota.table.value)
    resources = [row[0] for row in rows]
    assert "memory" in " ".join(resources) and len(rows) >= 3
    assert all(row[-1] in ("yes", "no") for row in rows)
    verdict = text(walk.quota.verdict.value)
    assert verdict.startswith(("Enough capacity", "Not enough capacity"))
    assert "Models that fit here now" in verdict and "resnet50" in verdict  # 24 GiB here
    assert walk.quota.progress.updates > 1


def test_quota_verdict_lists_exactly_the_models_the_model_step_offers(walk):
    """The sample is listed (it is preselected), and only models the model step offers."""
    click(walk.quota, walk.quota.check_button)
    verdict = text(walk.quota.verdict.value)
    listed = verdict.split("Models that fit here now")[1].split(":", 1)[1].strip(" .")
    offered = [key for _, key in walk.model.choice.options if key != "__own__"]
    assert list(walk.quota.report.details["models"]) == offered  # judged: exactly these
    assert listed.split(", ")[0] == "squeezenet" and set(listed.split(", ")) <= set(offered)
    # Each model once: its INT8 build is the precision toggle, not a second entry.
    assert offered == [c.key for c in model_choices() if not c.key.startswith("quantized-")]
    assert "ssd_vgg" in offered and "quantized-resnet50" not in offered


def test_quota_error_is_shown_in_the_widget(monkeypatch):
    """Azure without a usable sign-in: the widget says what to do; no traceback escapes."""

    class NoSignIn:
        def get_token(self, *scopes, **kwargs):
            from accel_widgets.errors import QuotaError

            raise QuotaError("no Azure credentials found; run `az login`")

    monkeypatch.setenv("AZURE_SUBSCRIPTION_ID", "00000000-0000-0000-0000-000000000000")
    quota = QuotaWidget(credential=NoSignIn(), endpoint="http://127.0.0.1:9")
    quota.target.value = "azure"
    assert quota.azure_box.layout.display == ""
    quota.run()
    assert "az login" in quota.error
    assert "az login" in text(quota.error_box.value)
    assert not quota.done


def test_the_whole_walk_by_clicks_scores_a_cat(walk, workspace):
    """Model -> convert -> deploy -> score on the cat photo, each by its button."""
    click(walk.quota, walk.quota.check_button)
    assert walk.model.choice.value == "squeezenet"
    click(walk.model, walk.model.use_button)
    assert walk.model.done and not walk.convert.locked
    assert "SqueezeNet" in text(walk.convert.summary.value)

    seen: list[float] = []
    walk.convert.progress.observe(lambda change: seen.append(change["new"]), "updates")
    click(walk.convert, walk.convert.convert_button)
    assert walk.convert.error == ""
    # The sample is registered as it ships, not converted: the words say what happened.
    assert walk.convert.status == (
        "registered squeezenet:1 as is (fp16, not converted); ready to deploy"
    )
    assert len(seen) > 1, "the progress did not move while the model was registered"
    report = cells(walk.convert.report_table.value)
    column = {name: i for i, name in enumerate(REPORT_COLUMNS)}
    assert report[0][0] == "fp16" and "registered as is" in report[0][2]
    assert report[0][column["top-1 agreement"]] == "- (ran on 6 photos)"
    # Accuracy on the 500 shared labelled photos, beside the speed measured on this machine.
    assert report[0][column["accuracy on labelled photos"]].startswith("top-1 0.6")
    assert float(report[0][column["ONNX Runtime p50 here (ms)"]]) > 0
    # The log said "checking it on real photos": the report shows what that check found.
    check = text(walk.convert.report_table.value)
    assert "Ran on 6 bundled photos" in check and "cat (chelsea) →" in check

    assert walk.deploy.service_name.value == "squeezenet"
    click(walk.deploy, walk.deploy.deploy_button)
    assert walk.deploy.error == ""
    service = walk.deploy.service
    assert "ready at 127.0.0.1:" in walk.deploy.status
    details = text(walk.deploy.details.value)
    assert f"127.0.0.1:{service.port}" in details and "running" in details
    assert psutil.pid_exists(service.pid)

    assert walk.score.sample.value == "chelsea"
    click(walk.score, walk.score.score_button)
    assert walk.score.error == ""
    top5 = cells(walk.score.top5.value, "accel-top5-row")
    assert len(top5) == 5
    assert top5[0][0] in CATS, top5
    confidences = [float(row[1]) for row in top5]
    assert confidences == sorted(confidences, reverse=True) and 0 < confidences[0] <= 1
    # The top 5 is shown once, as a table with a bar per class (no second chart of it).
    assert walk.score.top5.value.count("accel-top5-bar") == 5
    assert "Top 5 for cat (chelsea)" in text(walk.score.top5.value)
    assert walk.score.status.startswith("cat (chelsea): ")
    assert walk.score.picture.value[:2] == b"\xff\xd8"  # the photo itself is shown
    assert re.search(r"\d+\.\d ms", text(walk.score.latency.value))

    walk.score.requests.value = 20
    click(walk.score, walk.score.benchmark_button)
    stats = text(walk.score.stats.value)
    assert re.fullmatch(
        r"20 requests, 1 at a time: p50 \d+\.\d ms, p99 \d+\.\d ms, \d+\.\d requests/s", stats
    )
    # The histogram is an SVG shown at the size it was drawn (never stretched to the cell).
    histogram = walk.score.histogram
    svg = bytes(histogram.value)
    assert histogram.format == "svg+xml" and b"<svg" in svg
    width, height = svg_size(svg)
    assert (histogram.layout.width, histogram.layout.height) == (f"{width}px", f"{height}px")
    assert width <= 640 and height <= 300  # fits a 1280x800 laptop screen with room to spare
    assert svg.count(b"stroke-dasharray") >= 2  # the p50 and p99 lines, dashed and dotted
    assert walk.score.benchmark.errors == 0

    # Scoring opened clean-up, which lists the service and the model it blocks.
    assert not walk.cleanup.locked
    labels = [text(row.children[0].value) for row in walk.cleanup.rows.children]
    assert labels[0].startswith("service squeezenet")
    assert (
        labels[1].startswith("model squeezenet:1")
        and "delete first: service squeezenet" in labels[1]
    )


def test_clean_up_deletes_in_dependency_order_after_a_confirmation(walk, workspace):
    walk.run_all()
    pid = walk.deploy.service.pid
    service_row, model_row = walk.cleanup.rows.children
    assert model_row.children[-1].disabled, "a model a service runs must not be deletable"

    service_row.children[-1].click()  # asks first
    question = walk.cleanup.confirm_box.children
    assert "Delete service squeezenet?" in text(question[0].value)
    assert psutil.pid_exists(pid) and workspace.list_services()
    question[2].click()  # "Keep it"
    assert walk.cleanup.confirm_box.children == () and workspace.list_services()

    service_row.children[-1].click()
    yes = walk.cleanup.confirm_box.children[1]
    click(walk.cleanup, yes)
    assert walk.cleanup.error == ""
    assert workspace.list_services() == []
    assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    (model_row,) = walk.cleanup.rows.children
    assert not model_row.children[-1].disabled  # the model can go now
    model_row.children[-1].click()
    click(walk.cleanup, walk.cleanup.confirm_box.children[1])
    assert workspace.list_models() == []
    assert walk.cleanup.status.startswith("deleted model squeezenet:1")


def test_running_the_walk_again_reuses_the_model_and_the_service(walk, workspace):
    walk.run_all()
    first = walk.deploy.service
    again = Walkthrough(model="squeezenet", workspace=workspace, poll=None)
    again.run_all()
    assert again.convert.status.startswith("reusing squeezenet:1")
    assert "already running, reused" in again.deploy.status
    assert again.deploy.service.port == first.port and again.deploy.service.pid == first.pid
    assert len(workspace.list_models("squeezenet")) == 1
    assert cells(again.score.top5.value, "accel-top5-row")[0][0] in CATS


def test_a_corrupt_upload_is_an_error_in_the_widget_and_the_service_keeps_serving(walk):
    walk.run_all()
    walk.score.requests.value = 5
    click(walk.score, walk.score.benchmark_button)
    assert walk.score.histogram.value and walk.score.stats.value
    walk.score.use_image(b"\xff\xd8\xff\xe0 this is not really a JPEG", "broken.jpg")
    assert walk.score.sample.value == "__uploaded__"
    assert walk.score.sample.label == "yours: broken.jpg"
    click(walk.score, walk.score.score_button)
    assert "broken.jpg could not be scored" in walk.score.error
    assert "JPEG" in walk.score.error or "image" in walk.score.error.lower()
    # The error replaced the cat's result: nothing of the last score is left on screen...
    score = walk.score
    assert score.top5.value == "" and score.latency.value == "" and score.result is None
    assert score.picture.value == b"" and score.picture.layout.display == "none"
    assert score.histogram.value == b"" and score.stats.value == "" and score.benchmark is None
    assert score.status == "broken.jpg: not scored"
    # ...and it is at the top of the step, under the title, which no longer has a check mark.
    assert score.children.index(score.error_box) == 2  # header, lock hint, error
    assert "broken.jpg could not be scored" in text(score.error_box.value)
    assert "&#10003;" not in score.header.value and "&#10007;" in score.header.value
    walk.score.sample.value = "chelsea"
    click(walk.score, walk.score.score_button)
    assert walk.score.error == ""
    assert cells(walk.score.top5.value, "accel-top5-row")[0][0] in CATS


def test_score_step_without_a_service_says_what_to_do(workspace):
    score = ScoreWidget(workspace=workspace)
    score.run()
    assert score.error == "deploy a service in the step above first"
    assert not score.done


def test_words_name_precision_photos_and_estimates_as_they_are(weights_dir, workspace):
    """fp16 is called fp16, photos by what they show, a catalog latency an estimate."""
    model = ModelWidget(model="squeezenet")
    assert model.precision.options[0] == ("Float (fp16, as the sample ships)", "float")
    model.confirm()
    assert model.status.endswith("fp16, as the sample ships") and "float" not in model.status
    model.choice.value = "resnet50"
    assert model.precision.options[0] == ("Float (fp32)", "float")
    labels = [label for label, key in model.choice.options if key != "__own__"]
    assert all("catalog estimate" in label for label in labels if " ms" in label), labels
    assert "catalog estimate" in text(model.facts.value)
    model.precision.value = "int8"
    model.confirm()
    assert "quantized to INT8" in model.status

    score = ScoreWidget(workspace=workspace)
    names = dict(score.sample.options)
    assert names["cat (chelsea)"] == "chelsea" and names["espresso cup"] == "coffee"
    assert "astronaut (Eileen Collins)" in names
    assert score.sample.label == "cat (chelsea)"
    assert score.upload.description == "Upload your own photo"


class SlowStep(Step):
    """A step whose work takes a while to reach its next safe point (like a converter)."""

    css_name = "slow"

    def work(self) -> None:
        report = as_reporter(None, self._new_cancel())
        for _ in range(200):
            time.sleep(0.02)
            report("slow", None, "working")


def test_cancel_answers_at_once_and_says_when_it_is_done():
    step = SlowStep([])
    step._start(step.work)
    while step._cancel is None:
        time.sleep(0.01)
    step.cancel()
    assert step.status.startswith("cancelling...")  # before the work has stopped
    assert step.wait(30)
    assert re.fullmatch(r"cancelled \(\d+\.\d s after the click\)", step.status), step.status
    assert step.error.startswith("Cancelled") and not step.busy
    assert isinstance(step._cancel, CancelToken)


def test_model_step_checks_a_bring_your_own_path(tmp_path):
    model = ModelWidget()
    model.choice.value = "__own__"
    assert model.path.layout.display == "" and model.weights.layout.display == "none"
    model.path.value = str(tmp_path / "missing.onnx")
    model.confirm()
    assert "no ONNX file at" in model.error and not model.done


def test_model_step_offers_catalog_weights_and_int8(weights_dir):
    model = ModelWidget(model="resnet50")
    assert model.weights.layout.display == ""
    assert "224 x 224 pixels" in text(model.facts.value)
    model.weights.value = "random"
    model.precision.value = "int8"
    selection = model.confirm()
    assert selection["choice"].key == "resnet50"
    assert selection["weights"] == "random" and selection["quantize"] == "int8"
    model.precision.value = "float"  # a change after confirming asks for a new confirmation
    assert not model.done and model.selection is None


def test_progress_panel_moves_one_bar_per_step():
    panel = ProgressPanel()
    panel(ProgressEvent("build", 0.25, "loading"))
    panel(ProgressEvent("build", 0.5, "saving"))
    panel(ProgressEvent("convert", None, "optimizing"))
    assert panel.bar("build").value == 0.5
    assert panel.bar("convert").bar_style == "info"
    assert panel.updates == 3
    assert panel.log_text.splitlines()[-1].endswith("convert: optimizing")
    panel.finish(False)
    assert panel.bar("build").bar_style == "danger"


@pytest.mark.slow
def test_catalog_model_converts_with_a_tensorflow_report_and_can_be_cancelled(walk, workspace):
    """ResNet-50 with random weights: cancel the first run, then convert for real."""
    walk.quota.run()
    walk.model.choice.value = "resnet50"
    walk.model.weights.value = "random"
    walk.model.confirm()

    updates: list[int] = []
    walk.convert.progress.observe(lambda change: updates.append(change["new"]), "updates")
    walk.convert.convert_button.click()
    assert not walk.convert.cancel_button.disabled  # Cancel is offered while it runs
    while not updates and walk.convert.busy:
        walk.convert.wait(0.05)
    walk.convert.cancel_button.click()
    assert walk.convert.wait(CLICK_TIMEOUT_S)
    assert walk.convert.error.startswith("Cancelled")
    assert workspace.list_models("resnet50") == [] and not walk.convert.done

    seen: list[float] = []
    walk.convert.progress.observe(lambda change: seen.append(change["new"]), "updates")
    click(walk.convert, walk.convert.convert_button)
    assert walk.convert.error == "" and walk.convert.done
    assert len(seen) > 5
    (row,) = cells(walk.convert.report_table.value)
    column = {name: i for i, name in enumerate(REPORT_COLUMNS)}
    assert row[0] == "fp32" and row[2] == "TensorFlow"
    # Random weights give every photo one class: the table says the agreement proves nothing.
    assert row[column["top-1 agreement"]] == (
        "32/32 photos (not informative: the reference gives nearly every photo one class)"
    )
    assert float(row[3]) < 1e-3
    assert float(row[column["ONNX Runtime p50 here (ms)"]]) > 0
    assert float(row[column["reference p50 (ms)"]]) > 0
    # The conversion itself is proven by the differences, whatever the classes mean.
    assert row[column["check"]].startswith("✓ matches TensorFlow")


def test_progress_log_folds_repeated_ticks_into_one_line():
    """A server warming up reports every 50 ms; the log shows one line that counts up."""
    panel = ProgressPanel()
    panel(ProgressEvent("deploy", 0.1, "starting the server"))
    for tenths in range(1, 30):
        panel(ProgressEvent("deploy", None, f"loading and warming up the model ({tenths / 10} s)"))
    panel(ProgressEvent("deploy", 1.0, "ready"))
    lines = panel.log_text.splitlines()
    assert len(lines) == 3, lines
    assert lines[1].endswith("(2.9 s)") and lines[2].endswith("deploy: ready")
    assert panel.updates == 31


def test_imagenet_weights_offline_is_a_clear_error_in_the_convert_step(walk, workspace):
    """No download here: the step names the weight file and the ways out; nothing is kept."""
    walk.quota.run()
    walk.model.choice.value = "resnet50"
    walk.model.weights.value = "imagenet"
    walk.model.confirm()
    click(walk.convert, walk.convert.convert_button)
    error = walk.convert.error
    assert "resnet50_weights_tf_dim_ordering_tf_kernels.h5" in error, error
    assert "random" in error
    assert "Traceback" not in text(walk.convert.error_box.value)
    assert walk.convert.status == "not converted" and not walk.convert.done
    assert workspace.list_models() == []
    assert walk.deploy.locked


def test_without_the_sample_the_model_step_preselects_what_works_and_says_why(
    tmp_path, monkeypatch
):
    """A clone with no weights folder: not a broken 'own ONNX file' path named squeezenet."""
    empty = tmp_path / "weights"
    empty.mkdir()
    monkeypatch.setenv("ACCEL_WIDGETS_WEIGHTS_DIR", str(empty))
    step = ModelWidget(model="squeezenet")
    assert step.choice.value == "densenet121" and step.weights.value == "random"
    note = text(step.note.value)
    assert "not on this machine" in note and "accel-widgets sample" in note
    assert "meaningless" in note
    assert step.path.value == ""


# --------------------------------------------------------------------------- one source of truth


def test_a_service_deleted_behind_the_walks_back_reopens_deploy_and_locks_score(walk, workspace):
    """The sidebar's Stop (the engine's delete_service) while the walk shows the service:
    after one refresh the Deploy step lost its check mark and says why, Score says to deploy
    first, and deploying again by the button scores the cat."""
    walk.run_all()
    name = walk.deploy.service.name
    assert "running" in text(walk.deploy.details.value)
    delete_service(name, workspace)  # what the sidebar's Stop does
    walk.state.refresh()

    deploy = walk.deploy
    assert deploy.service is None and not deploy.done
    assert deploy.status == f"service {name} is gone (deleted or stopped); deploy again"
    assert "&#10003;" not in deploy.header.value and "running" not in text(deploy.details.value)
    assert not deploy.deploy_button.disabled  # it can deploy again
    assert walk.score.locked and walk.score.service is None
    assert walk.score.status == "deploy a service in the step above first"
    assert walk.score.top5.value == "" and walk.score.result is None
    walk.score.run()
    assert "Finish the step above first" in walk.score.error or "deploy" in walk.score.error
    assert not walk.cleanup.locked  # the model is still there to clean up

    click(deploy, deploy.deploy_button)
    assert deploy.error == "" and deploy.done and "ready in" in deploy.status
    assert not walk.score.locked
    click(walk.score, walk.score.score_button)
    assert walk.score.error == ""
    assert cells(walk.score.top5.value, "accel-top5-row")[0][0] in CATS


def test_a_dead_service_says_so_and_check_health_says_it_plainly(walk, workspace):
    walk.run_all()
    service = walk.deploy.service
    psutil.Process(service.pid).kill()
    psutil.Process(service.pid).wait(10)
    walk.deploy.check_health()
    assert (
        walk.deploy.error == f"service {service.name} is dead (its process stopped); deploy again"
    )
    assert walk.deploy.service is None and not walk.deploy.done
    assert "dead" in text(walk.deploy.details.value)
    assert "running" not in text(walk.deploy.details.value)
    assert walk.score.status == "deploy a service in the step above first"


def test_a_delete_seen_half_done_ends_saying_gone_not_dead(walk, workspace):
    """The sidebar's Stop kills the process before it removes the record, so a poll can land
    between the two and see the service dead. The next poll, with the record gone, must say
    gone and drop the dead service's details (CI caught the walk stuck on "dead")."""
    walk.run_all()
    service = walk.deploy.service
    psutil.Process(service.pid).kill()
    psutil.Process(service.pid).wait(10)
    walk.state.refresh()  # the poll between the kill and the record's removal
    assert (
        walk.deploy.status == f"service {service.name} is dead (its process stopped); deploy again"
    )
    assert "dead" in text(walk.deploy.details.value)

    delete_service(service.name, workspace)  # the rest of the Stop
    walk.state.refresh()
    assert (
        walk.deploy.status == f"service {service.name} is gone (deleted or stopped); deploy again"
    )
    assert walk.deploy.details.value == ""
    assert walk.deploy.service is None and not walk.deploy.deploy_button.disabled
    assert walk.score.locked and walk.score.status == "deploy a service in the step above first"


def test_a_score_on_a_stopped_service_says_so_in_words_not_grpc(walk, workspace):
    """No poll ran between the stop and the click: the score's gRPC UNAVAILABLE is mapped with
    the service's live state to words."""
    walk.run_all()
    name = walk.deploy.service.name
    delete_service(name, workspace)
    click(walk.score, walk.score.score_button)
    assert walk.score.error == (
        f"the service {name} is not running any more; deploy it again in the step above"
    )
    assert "UNAVAILABLE" not in walk.score.error
    assert walk.deploy.service is None and "gone" in walk.deploy.status


def test_a_deleted_model_reopens_convert(walk, workspace):
    walk.run_all()
    delete_service(walk.deploy.service.name, workspace)
    workspace.delete_model("squeezenet")
    walk.state.refresh()
    convert = walk.convert
    assert not convert.done and convert.model is None and convert.report_table.value == ""
    assert convert.status == "model squeezenet:1 was deleted; convert it again"
    assert "&#10003;" not in convert.header.value
    assert walk.deploy.model is None and walk.package.model is None and walk.deploy.locked
    assert not convert.convert_button.disabled
    click(convert, convert.convert_button)
    assert convert.done and walk.deploy.model is not None and not walk.deploy.locked


def test_delete_everything_then_the_walk_runs_again_by_its_buttons(walk, workspace):
    """No new Walkthrough, no reload: Clean up's "Delete everything", then the same buttons."""
    walk.run_all()
    cleanup = walk.cleanup
    assert not cleanup.locked and not cleanup.all_button.disabled
    cleanup.all_button.click()
    assert "Delete everything" in text(cleanup.confirm_box.children[0].value)
    click(cleanup, cleanup.confirm_box.children[1])
    assert cleanup.error == "" and cleanup.status.startswith("deleted 2 item(s)")
    assert workspace.list_services() == [] and workspace.list_models() == []
    assert cleanup.locked and cleanup.rows.children == ()
    assert not walk.convert.done and walk.deploy.service is None and walk.score.locked

    click(walk.model, walk.model.use_button)
    click(walk.convert, walk.convert.convert_button)
    assert walk.convert.error == "" and walk.convert.done
    click(walk.deploy, walk.deploy.deploy_button)
    assert walk.deploy.error == "" and walk.deploy.done
    click(walk.score, walk.score.score_button)
    assert cells(walk.score.top5.value, "accel-top5-row")[0][0] in CATS
    # Clean up opened again with the new deploy (it is not left locked).
    assert not walk.cleanup.locked
    labels = [text(row.children[0].value) for row in walk.cleanup.rows.children]
    assert labels[0].startswith("service squeezenet")


def test_the_service_name_follows_the_model_unless_typed(walk):
    class Model:
        def __init__(self, name):
            self.name, self.version, self.ref = name, 1, f"{name}:1"

    deploy = walk.deploy
    deploy.model = Model("squeezenet")
    assert deploy.service_name.value == "squeezenet"
    deploy.model = Model("resnet50")
    assert deploy.service_name.value == "resnet50"
    deploy.service_name.value = "my-classifier"
    deploy.model = Model("mobilenet_v2")
    assert deploy.service_name.value == "my-classifier"


def test_the_poll_refreshes_the_state_and_stops_with_the_widget(workspace):
    walk = Walkthrough(model="squeezenet", workspace=workspace, poll=0.05)
    try:
        walk._view_count = 1  # on screen (what the front end sends)
        assert walk.state.polling
        start = walk.state.refreshes
        deadline = time.monotonic() + 10
        while walk.state.refreshes < start + 3:
            assert time.monotonic() < deadline, "the poll did not refresh the state"
            time.sleep(0.05)
    finally:
        walk.close()
    assert not walk.state.polling


def test_the_poll_runs_only_while_a_front_end_shows_the_walk(workspace, weights_dir):
    """A re-run cell leaves no poll behind: the front end's view count starts and stops it.

    The count is what JupyterLab and Voila send (ipywidgets' ``_view_count``); the browser
    tests see the real front end drive it (a service stopped from the sidebar reopens Deploy).
    """
    walk = Walkthrough(model="squeezenet", workspace=workspace, poll=0.05)
    try:
        assert not walk.state.polling  # created, not shown yet
        walk._view_count = 1  # the cell's output shows it
        assert walk.state.polling
        before = walk.state.refreshes
        deadline = time.monotonic() + 10
        while walk.state.refreshes == before and time.monotonic() < deadline:
            time.sleep(0.02)
        assert walk.state.refreshes > before
        walk._view_count = 0  # the cell is re-run: its old output goes
        assert not walk.state.polling
    finally:
        walk.close()
    assert not walk.state.polling


def test_a_locked_step_says_one_thing_and_an_empty_clean_up_has_no_check_mark(walk):
    """Score, locked, shows the lock hint only; Clean up on an empty workspace shows no ✓."""
    walk.score.status = "deploy a service in the step above first"
    assert walk.score.locked and "Finish the step above first" in walk.score.lock_hint.value
    assert walk.score.status_line.value == ""
    walk.cleanup._rebuild(keep_question=False)  # what Delete everything ends with
    assert walk.state.empty and not walk.cleanup.done
    assert "&#10003;" not in walk.cleanup.header.value
    assert "the workspace is empty" in walk.cleanup.lock_hint.value
    walk.cleanup.status = "deleted 3 item(s)"  # its last words stay beside the hint
    assert "deleted 3 item(s)" in walk.cleanup.status_line.value
