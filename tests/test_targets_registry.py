"""One target registry: a new target is an addition that the CLI, widgets and quota pick up.

The added target here is real, not a stand-in: it declares one setting of its own and runs
the model through the local target's server process, so the test proves the whole dispatch
(deploy, status, logs, delete recorded under the new target's name) on a real service.
"""

from __future__ import annotations

from typing import Any, ClassVar

import pytest

from accel_widgets.cli import build_parser, main
from accel_widgets.engine import targets as registry
from accel_widgets.engine.checks.samples import sample_photos
from accel_widgets.engine.clients.grpc_client import client_from_service
from accel_widgets.engine.models.register import register_onnx
from accel_widgets.engine.targets import (
    Setting,
    delete_service,
    deploy,
    get_target,
    list_services,
    service_logs,
)
from accel_widgets.engine.targets.local import LocalTarget
from accel_widgets.engine.targets.quota import check_quota, quota_targets
from accel_widgets.errors import QuotaError, ServingError

pytestmark = pytest.mark.timeout(180)


class ReplicatedLocal(LocalTarget):
    """A target with a setting of its own (``replicas``), served by the local process."""

    name = "replicated"
    title = "Replicated (test)"
    description = "the local server, with a replica count recorded"
    settings = (
        *LocalTarget.settings,
        Setting("replicas", int, 1, "how many copies to run"),
    )
    seen: ClassVar[list[dict[str, Any]]] = []

    def deploy(self, workspace, artifact, name, *, image, settings, report, image_reference=None):
        self.seen.append(dict(settings))
        local = {k: v for k, v in settings.items() if k != "replicas"}
        service = super().deploy(
            workspace, artifact, name, image=image, settings=local, report=report
        )
        info = {**service.info, "settings": {**service.info["settings"], "replicas": 2}}
        return workspace.update_service(name, info=info)


@pytest.fixture
def added_target():
    target = registry.register_target(ReplicatedLocal())
    yield target
    registry._REGISTRY.pop(target.name, None)


@pytest.fixture
def squeezenet(workspace, weights_dir):
    register_onnx(
        weights_dir / "SqueezeNet_fp16.onnx",
        "squeezenet",
        workspace=workspace,
        preprocessing={"channel_order": "BGR", "layout": "NCHW", "dtype": "float16"},
    )
    yield workspace
    for service in workspace.list_services():
        delete_service(service.name, workspace)


def test_an_added_target_appears_in_the_cli_the_deploy_widget_and_quota(added_target):
    from accel_widgets.widgets import DeployWidget, QuotaWidget

    parser = build_parser()
    args = parser.parse_args(["deploy", "m", "--target", "replicated", "--replicas", "3"])
    assert args.setting__replicas == 3  # its own namespace (cli.SETTING_DEST)
    deploy_widget = DeployWidget()
    assert ("Replicated (test)", "replicated") in deploy_widget.target.options
    deploy_widget.target.value = "replicated"
    form = deploy_widget.forms["replicated"]
    assert deploy_widget.form_box.children == (form,)
    deploy_widget.controls["replicated"]["replicas"].value = 4
    assert deploy_widget.settings()["replicas"] == 4
    assert "replicated" in quota_targets()
    assert ("Replicated (test)", "replicated") in QuotaWidget().target.options
    # The quota step runs the capacity check the target declares (this machine's).
    assert check_quota("replicated").target == "local"
    with pytest.raises(QuotaError, match="unknown target 'nowhere'; choose one of: local"):
        check_quota("nowhere")


def test_deploy_dispatches_on_the_recorded_target(added_target, squeezenet):
    workspace = squeezenet
    service = deploy("squeezenet", target="replicated", replicas="2", workspace=workspace)
    assert ReplicatedLocal.seen[-1]["replicas"] == 2  # coerced from the text "2"
    assert service.target == "replicated"
    [status] = list_services(workspace)
    assert status.live == "running"
    with client_from_service(service) as client:
        scores = client.score_image(sample_photos(["chelsea"])[0].data)
    assert scores.argmax() in range(281, 286)
    assert "ready: models squeezenet" in service_logs("squeezenet", workspace=workspace)
    delete_service("squeezenet", workspace)
    assert workspace.list_services() == []


def test_a_service_whose_target_is_gone_reads_unknown_not_a_crash(added_target, squeezenet):
    workspace = squeezenet
    deploy("squeezenet", target="replicated", workspace=workspace)
    registry._REGISTRY.pop("replicated")
    [status] = list_services(workspace)
    assert status.live == "unknown"
    with pytest.raises(ServingError, match="unknown target 'replicated'; available here: local"):
        delete_service("squeezenet", workspace)
    registry.register_target(added_target)  # back, so the fixture can stop the server


def test_settings_are_checked_against_what_the_target_declares(squeezenet):
    workspace = squeezenet
    with pytest.raises(ServingError, match="the local target has no setting replicas") as error:
        deploy("squeezenet", target="local", replicas=2, workspace=workspace)
    assert "its settings: host, port, auth" in str(error.value)
    with pytest.raises(ServingError, match="setting port='eighty' of the local target must"):
        deploy("squeezenet", target="local", port="eighty", workspace=workspace)
    with pytest.raises(ServingError, match="network='wifi' of the container target must be one"):
        get_target("container").resolve({"network": "wifi"})
    with pytest.raises(ServingError, match="unknown target 'moon'; available here: local"):
        deploy("squeezenet", target="moon", workspace=workspace)
    assert workspace.list_services() == []


def test_cli_refuses_a_flag_the_chosen_target_does_not_take(squeezenet, capsys):
    workspace = squeezenet
    code = main(["--workspace", str(workspace.root), "deploy", "squeezenet", "--network", "host"])
    assert code == 1
    err = capsys.readouterr().err
    assert "--network is not a setting of the local target; its settings: --host" in err
    assert workspace.list_services() == []


def test_cli_lists_targets_with_their_settings(capsys):
    assert main(["targets"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("local ")
    assert "container" in out and "--network" in out and "--ready-timeout" in out


# -- plugins cannot break the host (issue 22) ------------------------------------------------


class Clashing(LocalTarget):
    """A plugin whose settings take names that deploy() and the CLI use themselves."""

    name = "clashing"
    title = "Clashing (test)"
    description = "declares --version and --image"
    settings = (
        *LocalTarget.settings,
        Setting("version", str, "v1", "the plugin's own version string"),
        Setting("image", str, None, "the plugin's own image"),
    )


def test_a_setting_named_like_a_deploy_argument_is_refused_at_registration(capsys):
    with pytest.raises(ServingError) as refused:
        registry.register_target(Clashing())
    message = str(refused.value)
    assert "'clashing'" in message and "image, version" in message
    assert "rename them" in message and "reserved:" in message
    assert "clashing" not in registry.target_names()
    # Every command still parses and runs.
    build_parser()
    assert main(["targets"]) == 0
    assert "clashing" not in capsys.readouterr().out


def test_a_plugin_entry_point_with_a_reserved_setting_is_skipped_with_a_warning(
    monkeypatch, caplog
):
    class Entry:
        name = "clashing"

        @staticmethod
        def load():
            return Clashing

    monkeypatch.setattr(registry, "_PLUGINS_LOADED", False)
    monkeypatch.setattr(registry.importlib.metadata, "entry_points", lambda group: [Entry()])
    with caplog.at_level("WARNING"):
        names = registry.target_names()
    assert "clashing" not in names and "local" in names
    assert "target plugin clashing could not be loaded" in caplog.text
    assert "version" in caplog.text
    build_parser()  # the CLI is whole


def test_settings_reach_the_target_as_one_mapping(added_target, squeezenet):
    workspace = squeezenet
    service = deploy(
        "squeezenet", target="replicated", settings={"replicas": "3"}, workspace=workspace
    )
    assert ReplicatedLocal.seen[-1]["replicas"] == 3
    assert service.target == "replicated"
    with pytest.raises(ServingError, match="replicas was given twice"):
        deploy(
            "squeezenet",
            name="twice",
            target="replicated",
            settings={"replicas": 2},
            replicas=3,
            workspace=workspace,
        )


class Broken(LocalTarget):
    """A plugin with a bug: asking it about a service raises something that is not ours."""

    name = "broken"
    title = "Broken (test)"
    description = "raises in status and in reconcile"

    def status(self, workspace, service):
        raise RuntimeError("the cluster client fell over")


@pytest.fixture
def broken_target():
    target = registry.register_target(Broken())
    yield target
    registry._REGISTRY.pop(target.name, None)


def test_a_plugins_exception_is_that_services_unknown_state_and_nothing_more(
    broken_target, squeezenet, capsys
):
    workspace = squeezenet
    deploy("squeezenet", name="good", workspace=workspace)
    deploy("squeezenet", name="bad", target="broken", workspace=workspace)

    statuses = {s.service.name: s for s in list_services(workspace)}

    assert statuses["good"].live == "running" and statuses["good"].error is None
    bad = statuses["bad"]
    assert bad.live == "unknown" and not bad.healthy
    assert bad.error == "RuntimeError: the cluster client fell over"
    assert bad.shown == "unknown (error RuntimeError: the cluster client fell over)"
    assert main(["--workspace", str(workspace.root), "services"]) == 0
    table = capsys.readouterr().out
    [row] = [line for line in table.splitlines() if line.startswith("bad ")]
    assert "unknown (error RuntimeError: the cluster client fell over)" in row
    [row] = [line for line in table.splitlines() if line.startswith("good ")]
    assert "running" in row.split()
    Broken.reconcile = lambda self, workspace, service: 1 / 0  # a bug in reconcile too
    try:
        statuses = {s.service.name: s for s in list_services(workspace)}
        assert statuses["bad"].shown == "unknown (error ZeroDivisionError: division by zero)"
        assert statuses["good"].live == "running"
    finally:
        del Broken.reconcile


def test_the_deploy_form_sends_false_for_an_unticked_box_whose_default_is_true():
    from accel_widgets.widgets.deploy import setting_control, setting_value

    on = Setting("warm_up", bool, True, "warm the model up before serving")
    control = setting_control(on)
    assert control.value is True and setting_value(on, control) is True
    control.value = False
    assert setting_value(on, control) is False  # not None, which would mean "the default"
    decides = Setting("auth", bool, None, "require a key (the target decides by default)")
    control = setting_control(decides)
    assert setting_value(decides, control) is None
    control.value = True
    assert setting_value(decides, control) is True
