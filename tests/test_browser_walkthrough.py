"""The walkthrough in a real browser: JupyterLab and Voilà, clicked through like a person.

The widget tests exercise the Python side; these check what only a browser shows: that the
notebook opens and runs in a real JupyterLab, that the widgets render and answer clicks in
JupyterLab and in Voilà, and that the walk from capacity to a scored photo ends with a cat on
top for scikit-image's cat photo. Screenshots of each step are kept as test artifacts
(``test-artifacts/screenshots/<test>/`` or ``$ACCEL_WIDGETS_ARTIFACTS/screenshots/``), with
the server log beside a failure screenshot.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from browser_support import (
    NOTEBOOKS,
    LabServer,
    Sandbox,
    Screenshots,
    VoilaServer,
    delete_services,
    start_lab,
    start_voila,
)

pytestmark = [pytest.mark.browser, pytest.mark.timeout(300)]

NOTEBOOK = "walkthrough.ipynb"
# The ImageNet classes a photo of a cat may rightly come out as (Chelsea is a tabby); any
# other label with the word "cat" in it counts too.
CAT_CLASSES = {"egyptian cat", "tabby", "tiger cat", "persian cat", "siamese cat", "lynx"}
# Voilà runs the whole notebook before the page loads, and a cold CI machine imports slowly.
PAGE_LOAD_MS = 120_000

# One look at everything the test reacts to, in a single round trip: visible error boxes,
# the action buttons' state, each step's status line, the top 5 table, and tracebacks.
SNAPSHOT_JS = r"""() => {
  const visible = (el) => !!(el && el.getClientRects().length);
  const text = (el) => (el ? el.innerText.trim() : null);
  const one = (sel) => document.querySelector(sel);
  const button = (name) => {
    const b = one('.accel-walkthrough button.accel-' + name);
    return b ? {disabled: b.disabled, visible: visible(b)} : null;
  };
  const names = ['quota-check', 'use-model', 'convert', 'deploy', 'score'];
  const steps = ['quota', 'model', 'convert', 'deploy', 'score', 'cleanup'];
  const stderr = '[data-mime-type="application/vnd.jupyter.stderr"]';
  return {
    walk: visible(one('.accel-walkthrough')),
    errors: [...document.querySelectorAll('.accel-error')]
      .filter(visible).map(text).filter((t) => t),
    buttons: Object.fromEntries(names.map((n) => [n, button(n)])),
    status: Object.fromEntries(steps.map((s) => [s, text(one('.accel-' + s + '-status'))])),
    model: (one('.accel-model-choice select') || {}).value || null,
    latency: text(one('.accel-score-latency')),
    top5: [...document.querySelectorAll('.accel-top5 tr.accel-top5-row')]
      .map((tr) => [...tr.cells].map((td) => td.innerText.trim())),
    tracebacks: [...document.querySelectorAll(stderr)].map(text)
      .filter((t) => t && /Traceback \(most recent call last\)|^\w*(Error|Exception):/m.test(t)),
  };
}"""


def snapshot(page) -> dict[str, Any]:
    """The page state as plain data: one evaluate, no auto-waiting, so polling stays cheap."""
    return page.evaluate(SNAPSHOT_JS)


def describe(snap: dict[str, Any]) -> str:
    """The page's state in a few lines, for failure messages."""
    keys = ("status", "buttons", "model", "latency", "top5")
    return "\n".join(f"  {key}: {snap.get(key)!r}" for key in keys)


def wait_for(
    page, what: str, ready: Callable[[dict[str, Any]], bool], timeout: float
) -> dict[str, Any]:
    """Poll the page until ``ready`` holds; fail at once on an error box or a traceback.

    A red error in the walk is what a user would see instead of the result, so it fails the
    test with its own words rather than after a long timeout.
    """
    deadline = time.monotonic() + timeout
    while True:
        snap = snapshot(page)
        if snap["errors"]:
            raise AssertionError(
                f"the walk shows an error while waiting for {what}:\n"
                + "\n".join(snap["errors"])
                + "\n"
                + describe(snap)
            )
        if snap["tracebacks"]:
            raise AssertionError(
                f"the notebook shows a traceback while waiting for {what}:\n"
                + "\n".join(snap["tracebacks"])
            )
        if ready(snap):
            return snap
        if time.monotonic() > deadline:
            raise AssertionError(
                f"{what}: not seen after {timeout:.0f} s; the page shows\n" + describe(snap)
            )
        page.wait_for_timeout(300)


def enabled(name: str) -> Callable[[dict[str, Any]], bool]:
    """Button ``accel-<name>`` is shown and clickable: the walk has unlocked its step."""

    def check(snap: dict[str, Any]) -> bool:
        state = snap["buttons"].get(name)
        return bool(state and state["visible"] and not state["disabled"])

    return check


def status_matches(step: str, pattern: str) -> Callable[[dict[str, Any]], bool]:
    """The status line under ``step`` says what ``pattern`` looks for (any case)."""
    return lambda snap: bool(re.search(pattern, snap["status"].get(step) or "", re.IGNORECASE))


def is_cat(label: str) -> bool:
    """True for the ImageNet labels a person would accept for a photo of a cat."""
    label = label.strip().lower()
    return label in CAT_CLASSES or re.search(r"\bcat\b", label) is not None


def click(page, name: str) -> None:
    """A real click on a walk button (scrolled into view, checked visible and enabled)."""
    page.locator(f".accel-walkthrough button.accel-{name}").first.click(timeout=15_000)


def walk_to_a_cat(page, shots: Screenshots) -> list[list[str]]:
    """Capacity -> model -> convert -> deploy -> score chelsea, as a user clicks it.

    Returns the top 5 rows shown on the page.
    """
    wait_for(page, "the walkthrough widgets", enabled("quota-check"), 120)
    click(page, "quota-check")
    snap = wait_for(page, "the model step to unlock", enabled("use-model"), 60)
    assert "squeezenet" in (snap["model"] or "").lower(), (
        f"the walk should preselect the pretrained SqueezeNet, it shows {snap['model']!r}"
    )
    click(page, "use-model")
    wait_for(page, "the convert step to unlock", enabled("convert"), 30)
    click(page, "convert")
    wait_for(
        page,
        "the model converted (or reused) and deploy unlocked",
        lambda s: status_matches("convert", r"converted|reusing")(s) and enabled("deploy")(s),
        150,
    )
    page.locator(".accel-convert-status").first.scroll_into_view_if_needed()
    shots.take(page, "converted")
    click(page, "deploy")
    wait_for(
        page,
        "the service ready and scoring unlocked",
        lambda s: status_matches("deploy", r"ready")(s) and enabled("score")(s),
        120,
    )
    page.locator(".accel-deploy-status").first.scroll_into_view_if_needed()
    shots.take(page, "deployed")
    page.locator(".accel-sample select").first.select_option(label="cat (chelsea)")
    click(page, "score")
    snap = wait_for(
        page,
        "the top 5 classes and the latency",
        lambda s: bool(s["top5"]) and "ms" in (s["latency"] or ""),
        60,
    )
    top5 = page.locator(".accel-top5 tr.accel-top5-row")
    top5.first.scroll_into_view_if_needed()
    assert top5.first.is_visible(), "the top 5 table is on the page but not visible"
    shots.take(page, "scored")
    return snap["top5"]


def assert_cat_first(rows: list[list[str]]) -> None:
    """Five classes are listed and the best one, on top, is a cat with a real confidence."""
    assert len(rows) == 5, f"expected 5 classes on the page, got {rows!r}"
    label, confidence = rows[0][0], rows[0][-1]
    assert is_cat(label), f"the cat photo came out as {label!r} first; the page shows {rows!r}"
    assert 0.0 < float(confidence) <= 1.0, f"confidence {confidence!r} of {label!r}"


# --------------------------------------------------------------------------- fixtures


@pytest.fixture
def sandbox(tmp_path) -> Iterator[Sandbox]:
    """Jupyter folders, a copy of the notebooks and a fresh workspace, all under tmp_path.

    Teardown runs after the servers are stopped: every service the walk deployed is
    deleted, and a service process that survives fails the test.
    """
    if not (NOTEBOOKS / NOTEBOOK).is_file():
        pytest.fail(f"{NOTEBOOKS / NOTEBOOK} is missing")
    box = Sandbox(tmp_path / "browser")
    box.copy_notebooks()
    yield box
    deleted = delete_services(box.workspace)
    if deleted:
        print(f"deleted services: {', '.join(deleted)}")


@pytest.fixture
def lab(sandbox) -> Iterator[LabServer]:
    """A JupyterLab on the sandbox's notebook copy; stopped, kernels and all, whatever happens."""
    server = start_lab(sandbox, sandbox.notebooks)
    try:
        yield server
    finally:
        server.server.stop()
    assert not server.server.group_alive(), "jupyter lab left processes behind"


@pytest.fixture
def voila(sandbox) -> Iterator[VoilaServer]:
    """A Voilà app of the walkthrough copy; stopped, kernels and all, whatever happens."""
    server = start_voila(sandbox, sandbox.notebooks / NOTEBOOK)
    try:
        yield server
    finally:
        server.server.stop()
    assert not server.server.group_alive(), "voila left processes behind"


# --------------------------------------------------------------------------- tests


def test_jupyterlab_runs_the_walkthrough_and_scores_a_cat(lab, page, shots):
    """A user opens the notebook in JupyterLab, runs all cells and clicks through the walk.

    JupyterLab is where the widgets are meant to be used; this is the only check that the
    front end renders them, that clicks reach the kernel, and that the whole walk ends with
    the right answer on screen.
    """
    with shots.on_failure(page, [lab.server]):
        page.goto(lab.url(f"/lab/tree/{NOTEBOOK}", reset=""), timeout=PAGE_LOAD_MS)
        statusbar = page.locator("#jp-main-statusbar")
        # "| Idle" in the status bar means the kernel is connected (the toolbar says idle
        # earlier); running cells before that can lose them.
        statusbar.get_by_text(re.compile(r"\|\s*Idle")).wait_for(timeout=90_000)
        notebook = page.locator(".jp-NotebookPanel:not(.lm-mod-hidden)")
        assert notebook.locator(".jp-Cell").count() > 0, "the notebook opened with no cells"
        shots.take(page, "notebook-opened")

        page.locator("#jp-menu-panel, .lm-MenuBar").get_by_role(
            "menuitem", name="Run", exact=True
        ).first.click()
        page.get_by_role("menuitem", name=re.compile(r"^Run All Cells")).click()
        wait_for(page, "the walkthrough widgets", enabled("quota-check"), 120)
        shots.take(page, "widgets-shown")

        rows = walk_to_a_cat(page, shots)
        assert_cat_first(rows)
        news = page.get_by_text(re.compile("notified about official Jupyter news"))
        assert news.count() == 0, "JupyterLab's news pop-up is covering the notebook"


def test_voila_serves_the_walkthrough_and_scores_a_cat(voila, page, shots):
    """The same walk as a Voilà app: no code on screen, the widgets alone must work.

    Voilà is how the walk is shown to people who never open a notebook; it runs the
    notebook on its own kernel, so this catches widgets that only work with JupyterLab's
    front end around them.
    """
    with shots.on_failure(page, [voila.server]):
        page.goto(voila.url(), timeout=PAGE_LOAD_MS)
        wait_for(page, "the walkthrough widgets", enabled("quota-check"), 120)
        code = page.locator(".jp-CodeMirrorEditor:visible, .cm-editor:visible")
        source = page.get_by_text("Walkthrough(model=MODEL)")
        snippet = page.locator("pre:visible", has_text="accel_widgets")  # a markdown code block
        assert code.count() == 0 and source.count() == 0 and snippet.count() == 0, (
            "Voilà shows the notebook's code; it should show only text and widgets"
        )
        shots.take(page, "app-opened")

        rows = walk_to_a_cat(page, shots)
        assert_cat_first(rows)


# --------------------------------------------------------------------------- a laptop screen

LAPTOP = {"width": 1280, "height": 800}

# Where the score step's pieces are, in CSS pixels of the viewport, and each picture's
# natural size against the size it is drawn at.
SCORE_LAYOUT_JS = r"""() => {
  const one = (sel) => document.querySelector('.accel-walkthrough ' + sel);
  const box = (el) => {
    if (!el || !el.getClientRects().length) return null;
    const r = el.getBoundingClientRect();
    return {top: r.top, bottom: r.bottom, left: r.left, right: r.right,
            width: r.width, height: r.height};
  };
  const picture = (sel) => {
    const img = one(sel + ' img') || one('img' + sel);
    if (!img || !img.getClientRects().length) return null;
    return {box: box(img), natural: [img.naturalWidth, img.naturalHeight],
            complete: img.complete, src: img.src.slice(0, 5)};
  };
  const errors = [...document.querySelectorAll('.accel-step-score .accel-error')]
    .filter((el) => el.getClientRects().length && el.innerText.trim());
  return {
    viewport: [window.innerWidth, window.innerHeight],
    step: box(one('.accel-step-score')),
    benchmark: box(one('button.accel-benchmark')),
    score: box(one('button.accel-score')),
    photo: picture('.accel-picture'),
    histogram: picture('.accel-histogram'),
    top5: [...document.querySelectorAll('.accel-top5 tr.accel-top5-row')].length,
    latency: (one('.accel-score-latency') || {}).innerText || '',
    error: errors.length ? {text: errors[0].innerText.trim(), box: box(errors[0])} : null,
    header: (one('.accel-step-score h3') || {}).innerText || '',
  };
}"""


def score_layout(page) -> dict[str, Any]:
    return page.evaluate(SCORE_LAYOUT_JS)


def in_viewport(box: dict[str, float] | None, viewport: list[int]) -> bool:
    """The whole box is on screen."""
    return bool(box) and box["top"] >= 0 and box["bottom"] <= viewport[1] and box["left"] >= 0


def drawn_at_natural_size(picture: dict[str, Any] | None) -> bool:
    """An image shown at the size it was drawn: no upscaling, no squeezing (1 px of rounding)."""
    if not picture or not picture["complete"]:
        return False
    width, height = picture["natural"]
    box = picture["box"]
    return abs(box["width"] - width) <= 1 and abs(box["height"] - height) <= 1


@pytest.fixture
def laptop(browser) -> Iterator[Any]:
    """A page the size of a 1280x800 laptop screen."""
    context = browser.new_context(viewport=LAPTOP)
    context.set_default_timeout(30_000)
    try:
        yield context.new_page()
    finally:
        context.close()


def open_lab_walkthrough(page, lab: LabServer, shots: Screenshots) -> None:
    """The notebook opened in JupyterLab, all cells run, the walk's widgets on screen."""
    page.goto(lab.url(f"/lab/tree/{NOTEBOOK}", reset=""), timeout=PAGE_LOAD_MS)
    page.locator("#jp-main-statusbar").get_by_text(re.compile(r"\|\s*Idle")).wait_for(
        timeout=90_000
    )
    page.locator("#jp-menu-panel, .lm-MenuBar").get_by_role(
        "menuitem", name="Run", exact=True
    ).first.click()
    page.get_by_role("menuitem", name=re.compile(r"^Run All Cells")).click()
    wait_for(page, "the walkthrough widgets", enabled("quota-check"), 120)


def show_score_step(page) -> None:
    """Scroll so that the Score step starts at the top of the notebook panel."""
    page.locator(".accel-walkthrough .accel-step-score").first.evaluate(
        "(el) => el.scrollIntoView({block: 'start'})"
    )
    page.wait_for_timeout(300)


def test_score_step_fits_a_laptop_screen_and_charts_are_not_stretched(lab, laptop, shots):
    """At 1280x800 the scored photo, its top 5 and the Benchmark button are on one screen,
    and the pictures are drawn at their own size, not stretched to the cell."""
    page = laptop
    with shots.on_failure(page, [lab.server]):
        open_lab_walkthrough(page, lab, shots)
        rows = walk_to_a_cat(page, shots)
        assert_cat_first(rows)

        show_score_step(page)
        layout = score_layout(page)
        shots.take(page, "laptop-scored")
        assert layout["viewport"] == [1280, 800]
        assert in_viewport(layout["benchmark"], layout["viewport"]), (
            f"the Benchmark button is off screen after scoring: {layout!r}"
        )
        assert layout["photo"] and layout["photo"]["box"]["width"] <= 300, layout["photo"]
        assert layout["photo"]["box"]["width"] <= layout["photo"]["natural"][0], (
            f"the photo is upscaled: {layout['photo']!r}"
        )

        page.locator(".accel-walkthrough .accel-score-latency").first.wait_for()
        requests = page.locator(".accel-walkthrough .accel-step-score input[type=number]")
        requests.first.fill("30")
        requests.first.press("Tab")
        click(page, "benchmark")
        deadline = time.monotonic() + 60
        while not drawn_at_natural_size((layout := score_layout(page))["histogram"]):
            assert time.monotonic() < deadline, f"no histogram at its natural size: {layout!r}"
            page.wait_for_timeout(300)
        page.locator(".accel-walkthrough .accel-histogram").first.scroll_into_view_if_needed()
        layout = score_layout(page)
        shots.take(page, "laptop-benchmarked")
        histogram = layout["histogram"]
        assert histogram["src"] == "blob:", histogram  # the SVG, not a stretched PNG
        width, height = histogram["natural"]
        assert (width, height) == (576, 240), histogram
        assert drawn_at_natural_size(histogram), f"the histogram is stretched: {histogram!r}"
        assert in_viewport(histogram["box"], layout["viewport"]), histogram


def fail_a_score_with_a_non_image(page, shots: Screenshots) -> None:
    """With the cat scored: upload a file that is no image and score it; the cat's top 5,
    latency and photo are gone, and the error is on screen at the top of the Score step."""
    show_score_step(page)
    upload = page.locator(".accel-walkthrough .accel-upload").first
    # FileUpload writes "<description> (0)"; the page shows the words without the count.
    label = upload.evaluate(
        "(el) => [getComputedStyle(el, '::after').content, getComputedStyle(el).fontSize]"
    )
    assert label == ['"Upload your own photo"', "0px"], label
    with page.expect_file_chooser() as chooser:
        upload.click()
    chooser.value.set_files(
        files=[{"name": "cat.jpg", "mimeType": "image/jpeg", "buffer": b"not a picture\n"}]
    )
    page.locator(".accel-walkthrough .accel-sample select").first.locator(
        "option", has_text="yours: cat.jpg"
    ).wait_for(state="attached", timeout=15_000)
    page.wait_for_timeout(500)  # the drop-down switches to the upload in the kernel
    click(page, "score")
    deadline = time.monotonic() + 60
    while not (layout := score_layout(page))["error"]:
        assert time.monotonic() < deadline, f"no error shown: {layout!r}"
        page.wait_for_timeout(300)
    shots.take(page, "failed-upload")
    error = layout["error"]
    assert "cat.jpg could not be scored" in error["text"], error
    assert layout["top5"] == 0 and layout["latency"].strip() == "", (
        f"the cat's result is still on screen after a failed score: {layout!r}"
    )
    assert layout["photo"] is None, f"a picture is still shown: {layout['photo']!r}"
    assert "✓" not in layout["header"], layout["header"]
    assert in_viewport(error["box"], layout["viewport"]), (
        f"the error is out of view at {error['box']!r}"
    )
    step = layout["step"]
    assert error["box"]["top"] - step["top"] < 150, "the error is not at the top of the step"


def test_a_failed_score_replaces_the_old_result_with_the_error_in_view(lab, laptop, shots):
    """Score the cat, then upload a file that is no image: the cat's top 5, latency and
    photo are gone, and the error is on screen at the Score step, not far below it."""
    page = laptop
    with shots.on_failure(page, [lab.server]):
        open_lab_walkthrough(page, lab, shots)
        assert_cat_first(walk_to_a_cat(page, shots))
        fail_a_score_with_a_non_image(page, shots)


def open_voila_walkthrough(page, voila: VoilaServer) -> None:
    """The Voila app loaded, the walk's widgets on screen."""
    page.goto(voila.url(), timeout=PAGE_LOAD_MS)
    wait_for(page, "the walkthrough widgets", enabled("quota-check"), 120)


def test_voila_a_failed_score_replaces_the_old_result_with_the_error_in_view(voila, laptop, shots):
    """The same failed upload in Voila: the old result is gone, the error is in view."""
    page = laptop
    with shots.on_failure(page, [voila.server]):
        open_voila_walkthrough(page, voila)
        assert_cat_first(walk_to_a_cat(page, shots))
        fail_a_score_with_a_non_image(page, shots)


# --------------------------------------------------------------------------- one source of truth


def deploy_details(page) -> str:
    return page.evaluate(
        "() => (document.querySelector('.accel-walkthrough .accel-service-details') || "
        "{innerText: ''}).innerText"
    )


def stop_the_service_and_deploy_again(page, sandbox: Sandbox, shots: Screenshots) -> None:
    """With the cat scored: stop the service as the sidebar's Stop does (the engine's
    delete_service); within 5 s Deploy no longer says running and Score says to deploy
    first; deploying again and scoring works without a reload."""
    from accel_widgets.engine.targets import delete_service
    from accel_widgets.engine.workspace import Workspace

    assert "running" in deploy_details(page)

    workspace = Workspace(sandbox.workspace)
    (service,) = workspace.list_services()
    delete_service(service.name, workspace)
    stopped = time.monotonic()
    snap = wait_for(
        page,
        "the Deploy step to lose the stopped service and Score to lock again",
        # A locked Score shows the lock hint alone, not its status in other words too.
        lambda s: status_matches("deploy", r"gone")(s) and not enabled("score")(s),
        5,
    )
    took = time.monotonic() - stopped
    assert "running" not in (snap["status"]["deploy"] or "").lower(), snap["status"]
    assert "running" not in deploy_details(page)
    assert not snap["top5"], "the old score is still on screen"
    assert enabled("deploy")(snap) and not enabled("score")(snap)
    assert not snap["status"]["score"], "a locked Score repeats the lock hint in its status"
    page.locator(".accel-deploy-status").first.scroll_into_view_if_needed()
    shots.take(page, "service-stopped")
    print(f"the walk showed the stop after {took:.1f} s")

    click(page, "deploy")
    wait_for(
        page,
        "the service ready again and scoring unlocked",
        lambda s: status_matches("deploy", r"ready")(s) and enabled("score")(s),
        120,
    )
    page.locator(".accel-sample select").first.select_option(label="cat (chelsea)")
    click(page, "score")
    snap = wait_for(page, "the top 5 again", lambda s: bool(s["top5"]), 60)
    assert_cat_first(snap["top5"])
    page.locator(".accel-top5").first.scroll_into_view_if_needed()
    shots.take(page, "scored-again")


def test_a_service_stopped_from_the_sidebar_reopens_deploy_within_seconds(
    lab, sandbox, page, shots
):
    """The walk shows the service running; it is stopped as the sidebar's Stop does. Within
    5 s the Deploy step no longer says running and Score says to deploy first; deploying
    again and scoring works without a reload."""
    with shots.on_failure(page, [lab.server]):
        open_lab_walkthrough(page, lab, shots)
        assert_cat_first(walk_to_a_cat(page, shots))
        stop_the_service_and_deploy_again(page, sandbox, shots)


def test_voila_a_service_stopped_from_the_sidebar_reopens_deploy_within_seconds(
    voila, sandbox, page, shots
):
    """The same stop from outside, seen in Voila: Deploy reopens, deploy again and score."""
    with shots.on_failure(page, [voila.server]):
        open_voila_walkthrough(page, voila)
        assert_cat_first(walk_to_a_cat(page, shots))
        stop_the_service_and_deploy_again(page, sandbox, shots)


# --------------------------------------------------------------------------- clean up


def test_delete_everything_then_walk_again_without_a_reload(lab, sandbox, page, shots):
    """Clean up's Delete everything, confirmed, empties the workspace; the walk then runs
    again from the top by its buttons, on the same page, and scores the cat again."""
    from accel_widgets.engine.workspace import Workspace

    with shots.on_failure(page, [lab.server]):
        open_lab_walkthrough(page, lab, shots)
        assert_cat_first(walk_to_a_cat(page, shots))

        click(page, "cleanup-all")
        click(page, "confirm-delete")
        snap = wait_for(
            page,
            "Clean up to report everything deleted",
            status_matches("cleanup", r"deleted \d+ item"),
            60,
        )
        page.locator(".accel-cleanup-status").first.scroll_into_view_if_needed()
        shots.take(page, "cleaned-up")
        workspace = Workspace(sandbox.workspace)
        assert not workspace.list_services(), "a service survived Delete everything"
        assert not snap["top5"], "the old score is still on screen after Delete everything"
        assert not enabled("score")(snap), f"Score is still open:\n{describe(snap)}"

        assert_cat_first(walk_to_a_cat(page, shots))


# --------------------------------------------------------------------------- polish (issue 25)

# What a user reads on the page, measured where only a browser can: text, rows of buttons,
# the log box's scrollbars and last line, the "ready" times.
POLISH_JS = r"""() => {
  const one = (sel) => document.querySelector('.accel-walkthrough ' + sel);
  const visible = (el) => !!(el && el.getClientRects().length);
  const page = document.body.innerText;
  const buttons = [...document.querySelectorAll('.accel-quota-target button')];
  const logs = [...document.querySelectorAll('.accel-walkthrough .accel-log')]
    .filter(visible).map((box) => {
      const el = box.querySelector('.accel-log-lines') || box.querySelector('textarea') || box;
      const r = el.getBoundingClientRect();
      let lastVisible = null;
      if (el.tagName === 'TEXTAREA') {
        lastVisible = el.scrollHeight <= el.clientHeight + 2 ||
          el.scrollTop + el.clientHeight >= el.scrollHeight - 2;
      } else {
        const walker = document.createTreeWalker(el, NodeFilter.SHOW_TEXT);
        let node = null, last = null;
        while ((node = walker.nextNode())) if (node.textContent.trim()) last = node;
        if (last) {
          const range = document.createRange();
          const end = last.textContent.trimEnd().length;
          range.setStart(last, Math.max(0, end - 1));
          range.setEnd(last, end);
          const c = range.getBoundingClientRect();
          lastVisible = c.top >= r.top - 1 && c.bottom <= r.bottom + 1;
        }
      }
      return {step: box.closest('.accel-step').className,
              sideways: el.scrollWidth > el.clientWidth + 1, lastVisible};
    });
  const deploy = one('.accel-step-deploy');
  const copy = one('.accel-copy');
  return {
    notebookWords: ['Run All Cells', 'RUN_ALL', 'restarting the kernel', 'beside this notebook']
      .filter((w) => page.includes(w)),
    guide: visible(one('.accel-voila-guide')),
    targetRows: new Set(buttons.map((b) => Math.round(b.getBoundingClientRect().top))).size,
    targetsCut: buttons.filter((b) => b.scrollWidth > b.clientWidth + 1).map((b) => b.innerText),
    logs,
    readyTimes: deploy ? [...new Set([...deploy.innerText.matchAll(
      /(?:ready (?:on \S+ )?in|time to ready)\s+([\d.]+) s/g)].map((m) => m[1]))] : [],
    copyStyled: !!(copy && copy.classList.contains('jupyter-button')),
    serviceName: (one('.accel-service-name input') || {}).value,
    convertLogShown: visible(one('.accel-step-convert .accel-log')),
    deployLogShown: visible(one('.accel-step-deploy .accel-log')),
    top5: document.querySelectorAll('.accel-walkthrough .accel-top5 tr.accel-top5-row').length,
    error: (one('.accel-step-score .accel-error') || {innerText: ''}).innerText.trim(),
    scoreHeader: (one('.accel-step-score h3') || {innerText: ''}).innerText,
  };
}"""


def polish(page) -> dict[str, Any]:
    return page.evaluate(POLISH_JS)


def test_voila_walk_reads_right_to_a_new_user(voila, laptop, shots):
    """Issue 25 on a Voila page at 1280x800: no notebook-only words; capacity targets on one
    row; logs that wrap and show their last line; one "ready" time; a styled copy button; an
    upload clears the old result and fails in words; another model clears the old logs and
    the old service name. Every check is made and screenshotted before any is asserted, so
    a run on the old code shows each defect."""
    from accel_widgets.engine.choices import get_choice
    from accel_widgets.widgets.model import choice_label

    page = laptop
    found: list[str] = []

    def check(ok: bool, what: str) -> None:
        if not ok:
            found.append(what)

    with shots.on_failure(page, [voila.server]):
        open_voila_walkthrough(page, voila)
        seen = polish(page)
        check(
            not seen["notebookWords"], f"notebook-only words on the page: {seen['notebookWords']}"
        )
        check(seen["guide"], "no Voila guide")
        check(seen["targetRows"] == 1, f"capacity targets on {seen['targetRows']} rows")
        check(not seen["targetsCut"], f"capacity targets cut: {seen['targetsCut']}")
        shots.take(page, "polish-opened")

        assert_cat_first(walk_to_a_cat(page, shots))
        seen = polish(page)
        check(seen["logs"] and not [g for g in seen["logs"] if g["sideways"]], f"logs: {seen}")
        check(all(g["lastVisible"] for g in seen["logs"]), f"a log hides its last line: {seen}")
        check(len(seen["readyTimes"]) == 1, f"ready times {seen['readyTimes']}")
        check(seen["copyStyled"], "a bare native copy button")
        page.locator(".accel-walkthrough .accel-step-deploy .accel-log").first.evaluate(
            "(el) => el.scrollIntoView({block: 'center'})"
        )
        shots.take(page, "polish-deploy-log")

        requests = page.locator(".accel-walkthrough .accel-step-score input[type=number]")
        requests.first.fill("30")
        requests.first.press("Tab")
        click(page, "benchmark")
        histogram = page.locator(".accel-walkthrough .accel-histogram").first
        histogram.wait_for(state="visible", timeout=60_000)
        histogram.scroll_into_view_if_needed()
        page.wait_for_timeout(300)
        shots.take(page, "polish-histogram")

        show_score_step(page)
        upload = page.locator(".accel-walkthrough .accel-upload").first
        with page.expect_file_chooser() as chooser:
            upload.click()
        chooser.value.set_files(
            files=[
                {
                    "name": "notimage.jpg",
                    "mimeType": "image/jpeg",
                    "buffer": b"this is not an image",
                }
            ]
        )
        page.wait_for_timeout(1500)  # the drop-down switches to the upload in the kernel
        seen = polish(page)
        check(seen["top5"] == 0, "the cat's top 5 stays after choosing the upload")
        shots.take(page, "polish-uploaded")
        click(page, "score")
        deadline = time.monotonic() + 60
        while not (seen := polish(page))["error"] and time.monotonic() < deadline:
            page.wait_for_timeout(300)
        check("b'" not in seen["error"] and "starts with the text" in seen["error"], seen["error"])
        shots.take(page, "polish-upload-error")

        model = page.locator(".accel-walkthrough .accel-model-choice select").first
        model.select_option(label=choice_label(get_choice("densenet121")))
        page.wait_for_timeout(1000)
        click(page, "use-model")
        page.wait_for_timeout(1500)
        seen = polish(page)
        check(seen["serviceName"] != "squeezenet", f"service name {seen['serviceName']!r}")
        check(not seen["convertLogShown"], "Convert still shows the last model's log")
        check(not seen["deployLogShown"], "Deploy still shows the last model's log")
        page.locator(".accel-walkthrough .accel-step-convert").first.evaluate(
            "(el) => el.scrollIntoView({block: 'start'})"
        )
        shots.take(page, "polish-model-changed")
    assert not found, "\n".join(found)


TRAIN_JS = r"""() => {
  const walk = document.querySelector('.accel-train-walk');
  const select = walk && walk.querySelector('.accel-train-source select');
  const pictures = [...document.querySelectorAll('.accel-train-walk .accel-class-example')];
  // The chosen option's words against the room the drop-down gives them.
  const canvas = document.createElement('canvas').getContext('2d');
  if (select) canvas.font = getComputedStyle(select).font;
  const chosen = select ? select.options[select.selectedIndex].text : '';
  return {
    headings: walk ? [...walk.querySelectorAll('.accel-step h3')].map((h) => h.innerText.trim())
      : [],
    sourceFits: !!select && canvas.measureText(chosen).width + 24 <= select.clientWidth,
    pictures: pictures.filter((img) => img.complete && img.naturalWidth > 0).length,
    photos: [...walk.querySelectorAll('.accel-sample select option')].map((o) => o.text),
  };
}"""


def test_voila_train_walk_is_numbered_and_shows_its_pictures(sandbox, laptop, shots):
    """Issue 25, item 10, on a Voila page: headings 1-5 (not "Train your own classes",
    "Convert", "5. Deploy"), the data-set drop-down whole, "Look at the data" with pictures,
    and no ImageNet photos offered to score a digits model."""
    server = start_voila(sandbox, sandbox.notebooks / "train-your-own.ipynb")
    page = laptop
    try:
        with shots.on_failure(page, [server.server]):
            page.goto(server.url(), timeout=PAGE_LOAD_MS)
            look = page.locator(".accel-train-walk button.accel-train-look").first
            look.wait_for(state="visible", timeout=120_000)
            look.click()
            page.locator(".accel-train-walk .accel-class-example").first.wait_for(
                state="visible", timeout=60_000
            )
            page.wait_for_timeout(500)
            seen = page.evaluate(TRAIN_JS)
            page.locator(".accel-train-walk").first.evaluate(
                "(el) => el.scrollIntoView({block: 'start'})"
            )
            shots.take(page, "train-look")
        assert [h.split(" ✓")[0] for h in seen["headings"]] == [
            "1. Train",
            "2. Convert",
            "3. Deploy",
            "4. Score",
            "5. Clean up",
        ], seen["headings"]
        assert seen["sourceFits"], "the data-set drop-down cuts its choice"
        assert seen["pictures"] == 40, seen  # 4 pictures of each of the 10 digits
        assert not [p for p in seen["photos"] if "cat" in p or "espresso" in p], seen["photos"]
    finally:
        server.server.stop()
