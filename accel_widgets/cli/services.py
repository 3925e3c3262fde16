"""The walk's later steps on the command line: capacity, package, deploy (or write a target's
manifests), score, watch the services and this machine, and clean up."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from accel_widgets.cli.output import (
    ERROR,
    SUCCESS,
    live_progress,
    mask,
    secret_note,
    table,
    workspace_of,
    wrapped,
)
from accel_widgets.cli.settings import SETTING_DEST, given_settings, target_names
from accel_widgets.errors import AccelError


def cmd_quota(args: argparse.Namespace) -> int:
    """Check the capacity a deployment needs: this machine, or an Azure region and VM family."""
    from accel_widgets.engine.targets.quota import check_quota

    settings: dict[str, Any] = {}
    if args.target in target_names():  # a target's settings; a capacity check has none
        from accel_widgets.engine.targets import get_target

        target = get_target(args.target)
        settings = given_settings(args, target)
        # The quota command's own options that are settings of the target too (Azure ML's
        # subscription) go on to it.
        own = {k: v for k, v in vars(args).items() if not k.startswith(SETTING_DEST)}
        settings.update({k: own[k] for k in target._names() if own.get(k) is not None})
    with live_progress() as (progress, cancel):
        report = check_quota(
            args.target,
            region=args.region,
            family=args.family,
            needed=args.needed,
            subscription_id=args.subscription,
            workspace_dir=args.workspace,
            progress=progress,
            cancel=cancel,
            settings=settings,
            model=args.model,
            workspace=workspace_of(args) if args.model else None,
        )
    print(table(report.to_table()))
    models = report.details.get("models") or {}
    if models:
        print()
        rows = [["model", "fits here", "why not"]]
        rows += [
            [name, "yes" if m["ok"] else "no", m.get("reason", "")] for name, m in models.items()
        ]
        print(table(rows))
    print()
    print(("ENOUGH: " if report.verdict else "NOT ENOUGH: ") + report.advice)
    return SUCCESS if report.verdict else ERROR


def cmd_package(args: argparse.Namespace) -> int:
    """Build a container image holding a converted model (and push or save it)."""
    from accel_widgets.engine.packaging.package import package

    with live_progress() as (progress, cancel):
        image = package(
            args.model,
            args.version,
            args.precision,
            name=args.name,
            base=args.base,
            push=args.push,
            save=args.save,
            no_cache=args.no_cache,
            workspace=workspace_of(args),
            progress=progress,
            cancel=cancel,
        )
    info = image.info
    print(f"image     {info['tag']}  ({image.ref} in the workspace)")
    print(f"id        {info['image_id'][:19]}  size {info['size_bytes'] / 1e6:.0f} MB")
    print(f"base      {info['base']} (Python {info.get('python', '?')})")
    print(
        "built in  "
        + (
            "reused: the same model on the same base"
            if info.get("reused")
            else f"{info['build_seconds']} s"
        )
    )
    for pushed in info.get("pushed", []):
        print(f"pushed    {pushed['ref']}  {pushed.get('digest', '')}")
    for saved in info.get("saved", []):
        print(f"saved     {saved['path']}  ({saved['bytes'] / 1e6:.0f} MB; docker load -i FILE)")
    labels = info.get("labels") or {}
    model = labels.get("io.accel-widgets.model", args.model)
    print(
        f"deploy it accel-widgets deploy {model} --version "
        f"{labels.get('io.accel-widgets.model-version', '')} --precision "
        f"{labels.get('io.accel-widgets.precision', '')} --target container --image {image.ref}"
    )
    return SUCCESS


def cmd_images(args: argparse.Namespace) -> int:
    """Packaged images: tag, id, size, the model they hold, base, and whether Docker has them."""
    from accel_widgets.engine.packaging.package import list_images

    statuses = list_images(workspace_of(args))
    if not statuses:
        print("No images. Package a converted model: accel-widgets package MODEL")
        return SUCCESS
    rows: list[list[Any]] = [["image", "tag", "id", "MB", "model", "base", "in docker", "pushed"]]
    for status in statuses:
        info = status.image.info
        present = {True: "yes", False: "REMOVED", None: "no engine"}[status.present]
        rows.append(
            [
                status.image.ref,
                info.get("tag") or "-",
                (info.get("image_id") or "-")[7:19],
                f"{int(info.get('size_bytes') or 0) / 1e6:.0f}",
                status.model,
                info.get("base", "-"),
                present,
                ", ".join(p["ref"] for p in info.get("pushed", [])) or "-",
            ]
        )
    print(table(rows))
    return SUCCESS


def cmd_deploy(args: argparse.Namespace) -> int:
    """Deploy a converted model as a gRPC service and wait until it answers."""
    from accel_widgets.engine.targets import deploy, get_target

    target = get_target(args.target)
    given = given_settings(args, target)
    workspace = workspace_of(args)
    with live_progress() as (progress, cancel):
        service = deploy(
            args.model,
            version=args.version,
            precision=args.precision,
            name=args.name,
            target=target.name,
            image=args.image,
            workspace=workspace,
            progress=progress,
            cancel=cancel,
            settings=given,
        )
    print(f"service   {service.name} ({service.target})")
    if service.info.get("protocol") == "rest":
        print(f"scoring   {service.info['scoring_uri']}  (HTTPS, TF Serving REST predict)")
    else:
        print(
            f"address   {service.address}:{service.port}  (gRPC: TF Serving PredictionService"
            " and Open Inference Protocol v2)"
        )
    if service.info.get("connect"):
        print(f"connect   {service.info['connect']}")
    if service.info.get("rest_port"):
        print(
            f"REST      http://{service.address}:{service.info['rest_port']}"
            f"/v1/models/{args.model}:predict"
        )
    for model, chosen in (service.info.get("runtimes") or {}).items():
        # Which runtime serves, and why (auto measured it, or it was asked for).
        print(
            f"runtime   {model}: {chosen.get('runtime')} on {chosen.get('device')}; "
            f"{chosen.get('chosen_by')}"
        )
    if service.info.get("image"):
        print(f"image     {service.info['image']} (container {service.info.get('container')})")
    print(
        f"key       {service.key if args.show_key else mask(service.key)}"
        + ("  (--show-key prints it)" if service.key and not args.show_key else "")
    )
    print(f"ready in  {service.info.get('ready_seconds')} s")
    print(f"score it  accel-widgets score {service.name} path/to/image.jpg")
    _warn_if_unproven(service, workspace)
    return SUCCESS


def _warn_if_unproven(service, workspace) -> None:
    """Say on stderr when the artifact served was not recommended by its checks."""
    from accel_widgets.engine.checks.verdicts import artifact_check

    artifact = workspace.get_artifact_by_id(service.artifact_id)
    check = artifact_check(artifact.report, artifact.precision)
    if check.mark == "warn":
        print(f"warning: it serves {artifact.precision}, which is {check.text}", file=sys.stderr)


def cmd_manifests(args: argparse.Namespace) -> int:
    """Write the objects a target would create (YAML for kubectl apply or GitOps)."""
    import yaml

    from accel_widgets.engine.store.workspace import write_private
    from accel_widgets.engine.targets import get_target, manifests

    target = get_target(args.target)
    given = given_settings(args, target)
    objects = manifests(
        args.model,
        version=args.version,
        precision=args.precision,
        name=args.name,
        target=target.name,
        image=args.image,
        workspace=workspace_of(args),
        settings=given,
    )
    secrets = [obj for obj in objects if obj.get("kind") == "Secret"]
    if not args.out:
        documents = []
        for obj in objects:
            text = yaml.safe_dump(obj, sort_keys=False)
            if obj.get("kind") == "Secret":
                note = secret_note(obj, "This Secret")
                text = "".join(f"# {line}\n" for line in wrapped(note)) + text
            documents.append(text)
        print("---\n".join(documents), end="")
        for obj in secrets:
            print(f"note: {secret_note(obj, 'The Secret in the output above')}", file=sys.stderr)
        return SUCCESS
    from pathlib import Path

    folder = Path(args.out)
    folder.mkdir(parents=True, exist_ok=True)
    notes = []
    for index, obj in enumerate(objects, 1):
        kind = obj.get("kind", "object").lower()
        name = obj.get("metadata", {}).get("name", "unnamed")
        path = folder / f"{index:02d}-{kind}-{name}.yaml"
        text = yaml.safe_dump(obj, sort_keys=False)
        if obj.get("kind") == "Secret":
            note = secret_note(obj, str(path))
            write_private(path, "".join(f"# {line}\n" for line in wrapped(note)) + text)
            notes.append(note)
        else:
            path.write_text(text)
        print(f"wrote {path}")
    print(f"apply with: kubectl apply -f {folder}")
    for note in notes:
        print(note)
    return SUCCESS


def cmd_targets(args: argparse.Namespace) -> int:
    """Where a service can run, and the settings each target takes."""
    from accel_widgets.engine.targets import targets

    for target in targets():
        print(f"{target.name:<10} {target.description}")
        for setting in target.settings:
            if setting.ui:
                default = "" if setting.default is None else f" (default {setting.default})"
                print(f"    {setting.flag:<16} {setting.help}{default}")
    return SUCCESS


def cmd_score(args: argparse.Namespace) -> int:
    """Score an image with a deployed service: top labels, confidences and latency."""
    from accel_widgets.engine.clients.grpc_client import client_from_service
    from accel_widgets.engine.clients.scoring import score, service_labels

    workspace = workspace_of(args)
    service = _scorable(workspace, args.service)
    labels = service_labels(service, workspace)
    if args.sample:
        from accel_widgets.engine.checks.samples import sample_photos

        data = sample_photos([args.sample])[0].data
    elif args.image:
        from pathlib import Path

        path = Path(args.image)
        if not path.is_file():
            raise AccelError(f"no image file at {path}")
        data = path.read_bytes()
    else:
        raise AccelError("give an image file, or --sample chelsea (a bundled cat photo)")
    if _serves_detector(workspace, service):
        return _score_detector(service, data, labels, args)
    with client_from_service(service) as client:
        results = [score(client, data, labels, k=args.top) for _ in range(max(1, args.repeat))]
    rows: list[list[Any]] = [["rank", "class", "label", "confidence"]]
    for rank, (index, label, value) in enumerate(results[0].top, 1):
        rows.append([rank, index, label, f"{value:.4f}"])
    print(table(rows))
    line = f"latency: {results[0].latency_ms:.1f} ms (first call, includes connecting)"
    if len(results) > 1:
        rest = sorted(r.latency_ms for r in results[1:])
        line += f"; p50 {rest[len(rest) // 2]:.1f} ms over {len(rest)} more calls"
    print(line)
    return SUCCESS


def _scorable(workspace, name: str):
    """The service as it is now (reconciled with what runs), or a clear error when it
    cannot be scored: still starting, or with no address recorded."""
    from accel_widgets.engine.targets import get_service

    service = get_service(name, workspace)
    if service.state == "starting":
        raise AccelError(
            f"service {name} is still starting (a deploy of it is under way); wait until "
            f"`accel-widgets services` says running, then score again"
        )
    if service.info.get("protocol") != "rest" and not service.port:
        raise AccelError(
            f"service {name} has no address recorded ({service.state}); deploy it again "
            f"(`accel-widgets deploy MODEL --name {name}`), or see `accel-widgets services`"
        )
    return service


def _serves_detector(workspace, service) -> bool:
    artifact = workspace.get_artifact_by_id(service.artifact_id)
    model = workspace.get_model(artifact.model_name, artifact.model_version)
    return model.spec.get("task") == "detection"


def _score_detector(service, data: bytes, labels, args: argparse.Namespace) -> int:
    """A detector's answer: one row per labelled box (class, score, [ymin, xmin, ymax, xmax])."""
    import time

    from accel_widgets.engine.clients.detection import detections_from_outputs
    from accel_widgets.engine.clients.grpc_client import client_from_service
    from accel_widgets.engine.models.ssd_decode import DETECTION_OUTPUTS

    timings = []
    with client_from_service(service) as client:
        for _ in range(max(1, args.repeat)):
            started = time.perf_counter()
            arrays = client.score_image(data, outputs=list(DETECTION_OUTPUTS))
            timings.append((time.perf_counter() - started) * 1000)
    found = detections_from_outputs(arrays, labels)
    rows: list[list[Any]] = [["#", "class", "label", "score", "box [ymin, xmin, ymax, xmax]"]]
    for rank, d in enumerate(found, 1):
        box = "[" + ", ".join(f"{v:.3f}" for v in d.box) + "]"
        rows.append([rank, d.class_id, d.label, f"{d.score:.4f}", box])
    print(table(rows) if found else "no objects found (score threshold 0.5)")
    print(f"{len(found)} detection(s)")
    line = f"latency: {timings[0]:.1f} ms (first call, includes connecting)"
    if len(timings) > 1:
        rest = sorted(timings[1:])
        line += f"; p50 {rest[len(rest) // 2]:.1f} ms over {len(rest)} more calls"
    print(line)
    return SUCCESS


def cmd_services(args: argparse.Namespace) -> int:
    """What runs, where, and whether it is healthy (checked now)."""
    from accel_widgets.engine.targets import list_services

    workspace = workspace_of(args)
    statuses = list_services(workspace)
    if not statuses:
        print("No services. Deploy one: accel-widgets deploy MODEL")
        return SUCCESS
    rows: list[list[Any]] = [["service", "model", "target", "address", "state", "key"]]
    for status in statuses:
        s = status.service
        artifact = workspace.get_artifact_by_id(s.artifact_id)
        rows.append(
            [
                s.name,
                f"{artifact.model_name}:{artifact.model_version} {artifact.precision}",
                s.target,
                f"{s.address}:{s.port}" if s.port else "-",
                status.shown,
                s.key if args.show_keys else mask(s.key),
            ]
        )
    print(table(rows))
    return SUCCESS


def cmd_logs(args: argparse.Namespace) -> int:
    """The last log lines of a service, wherever it runs."""
    from accel_widgets.engine.targets import service_logs

    text = service_logs(args.service, lines=args.lines, workspace=workspace_of(args))
    print(text or f"(service {args.service} has no log lines)")
    return SUCCESS


def cmd_room(args: argparse.Namespace) -> int:
    """Every accel-widgets service on this machine you can see (all your workspaces, and
    others' where the system shows them): memory, CPU, requests, idle time. With
    --stop-idle SECONDS, stop the local ones idle that long, after asking."""
    from accel_widgets.engine.targets.room import room_services, stop_idle

    services = room_services()
    if args.json:
        print(json.dumps([s.to_dict() for s in services], indent=2))
        return SUCCESS
    if not services:
        print("No accel-widgets services run on this machine.")
        return SUCCESS

    def shown(value: Any, unit: str = "") -> str:
        return "-" if value is None else f"{value:g}{unit}"

    rows: list[list[Any]] = [
        ["service", "target", "workspace", "user", "memory", "CPU", "requests", "idle"]
    ]
    for s in services:
        rows.append(
            [
                s.name,
                s.target,
                s.workspace,
                s.user,
                f"{s.rss_mb:.0f} MB",
                shown(s.cpu_percent, " %"),
                shown(s.requests),
                shown(None if s.idle_seconds is None else round(s.idle_seconds), " s"),
            ]
        )
    print(table(rows))
    total = sum(s.rss_mb for s in services)
    print(f"{len(services)} services, {total / 1024:.2f} GB in all")
    if args.stop_idle is None:
        return SUCCESS
    idle = [s for s in services if s.idle_seconds is not None and s.idle_seconds >= args.stop_idle]
    if not idle:
        print(f"None has been idle for {args.stop_idle:g} s.")
        return SUCCESS
    names = ", ".join(f"{s.name} ({s.workspace})" for s in idle)
    if not args.yes:
        answer = input(f"Stop {len(idle)} idle services: {names}? [y/N] ")
        if answer.strip().lower() not in ("y", "yes"):
            print("Nothing stopped.")
            return SUCCESS
    stopped = stop_idle(idle, args.stop_idle)
    print(f"stopped {len(stopped)}: " + ", ".join(s.name for s in stopped))
    print("Their owners start them again with `accel-widgets deploy`.")
    return SUCCESS


def cmd_delete(args: argparse.Namespace) -> int:
    """Delete a service, an image or a model (in that order: services first)."""
    workspace = workspace_of(args)
    if args.kind == "model":
        deleted = workspace.delete_model(args.name, args.version)
        print("deleted " + ", ".join(m.ref for m in deleted))
    elif args.kind == "image":
        from accel_widgets.engine.packaging.package import delete_image

        deleted_images = delete_image(args.name, args.version, workspace=workspace)
        print(
            "deleted "
            + ", ".join(f"image {i.ref} ({i.tag or 'not built'})" for i in deleted_images)
        )
    else:
        from accel_widgets.engine.targets import delete_service

        service = delete_service(args.name, workspace=workspace)
        print(f"deleted service {service.name}")
    return SUCCESS
