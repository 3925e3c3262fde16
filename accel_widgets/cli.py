"""The ``accel-widgets`` command: the same engine calls as the widgets, from a terminal.

Each command is a small function registered in :data:`COMMANDS`; engine modules are imported
only when a command runs, so ``accel-widgets models`` answers without loading TensorFlow.
Every :class:`~accel_widgets.errors.AccelError` becomes one clear line on stderr and exit
code 1; Ctrl-C cancels the running step and exits 130.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Sequence
from typing import Any

from accel_widgets.errors import AccelError, CancelledError
from accel_widgets.progress import CancelToken, TerminalProgress

SUCCESS, ERROR, USAGE, INTERRUPTED = 0, 1, 2, 130


def _table(rows: Sequence[Sequence[Any]]) -> str:
    """Plain aligned columns; the first row is the header."""
    text = [[str(cell) for cell in row] for row in rows]
    widths = [max(len(row[i]) for row in text) for i in range(len(text[0]))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)) for row in text]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(line.rstrip() for line in lines)


def _workspace(args: argparse.Namespace):
    from accel_widgets.engine.workspace import Workspace

    return Workspace(args.workspace)


def cmd_models(args: argparse.Namespace) -> int:
    """List the model catalog, one line a model."""
    from accel_widgets.engine.catalog import list_specs

    rows: list[list[Any]] = [["name", "task", "input", "classes", "precision", "MB", "ms here"]]
    for spec in list_specs():
        latency = spec.expected_latency_ms
        rows.append(
            [
                spec.name + ("" if spec.graph_ready else " (spec only)"),
                spec.task,
                f"{spec.input_size}px",
                spec.num_classes,
                spec.precision,
                f"{spec.file_mb:g}",
                f"{latency:g}" if latency else "-",
            ]
        )
    print(_table(rows))
    return SUCCESS


def cmd_quota(args: argparse.Namespace) -> int:
    """Check the capacity a deployment needs: this machine, or an Azure region and VM family."""
    from accel_widgets.engine.quota import check_quota

    settings: dict[str, Any] = {}
    if args.target != "azure":
        from accel_widgets.engine.targets import get_target

        target = get_target(args.target)
        settings = _given_settings(args, target, skip=("subscription",))
        if args.subscription and "subscription" in target._names():
            settings["subscription"] = args.subscription
    progress = TerminalProgress()
    report = check_quota(
        args.target,
        region=args.region,
        family=args.family,
        needed=args.needed,
        subscription_id=args.subscription,
        workspace_dir=args.workspace,
        progress=progress,
        settings=settings,
        model=args.model,
        workspace=_workspace(args) if args.model else None,
    )
    progress.close()
    print(_table(report.to_table()))
    models = report.details.get("models") or {}
    if models:
        print()
        rows = [["model", "fits here", "why not"]]
        rows += [
            [name, "yes" if m["ok"] else "no", m.get("reason", "")] for name, m in models.items()
        ]
        print(_table(rows))
    print()
    print(("ENOUGH: " if report.verdict else "NOT ENOUGH: ") + report.advice)
    return SUCCESS if report.verdict else ERROR


def cmd_convert(args: argparse.Namespace) -> int:
    """Build a catalog model (or take a registered one), convert it to ONNX, validate, quantize."""
    from accel_widgets.engine.catalog import CATALOG, get_spec, quantize_for
    from accel_widgets.engine.convert import convert

    workspace = _workspace(args)
    cancel = CancelToken()
    progress = TerminalProgress()
    quantize = args.quantize
    try:
        if args.model.lower() in CATALOG or workspace.find_model(args.model) is None:
            from accel_widgets.engine.build import build_model

            spec = get_spec(args.model)
            quantize = quantize_for(spec, quantize)
            record = build_model(
                spec.name,
                weights=args.weights,
                name=args.name,
                workspace=workspace,
                progress=progress,
                cancel=cancel,
            )
        else:
            record = workspace.get_model(args.model)
        artifacts = convert(
            record.name,
            version=record.version,
            quantize=quantize,
            workspace=workspace,
            calibration=args.calibration,
            validation=args.validation,
            calibration_method=args.calibration_method,
            progress=progress,
            cancel=cancel,
        )
    except KeyboardInterrupt:
        cancel.cancel()
        raise
    finally:
        progress.close()
    _print_reports(artifacts)
    return SUCCESS


def _print_reports(artifacts) -> None:
    """The validation table the Convert widget shows (engine/reports.py), then the files and,
    for an INT8 artifact that was not recommended, why and what deploy does instead."""
    from accel_widgets.engine.reports import REPORT_COLUMNS, report_row
    from accel_widgets.engine.verdicts import artifact_check
    from accel_widgets.engine.workspace import default_order

    print(_table([REPORT_COLUMNS, *(report_row(a) for a in artifacts)]))
    for artifact in artifacts:
        ref = f"{artifact.model_name}:{artifact.model_version}"
        print(f"{ref} {artifact.precision}  {artifact.file}")
    for artifact in artifacts:
        check = artifact_check(artifact.report, artifact.precision)
        if artifact.precision == "int8" and check.mark == "warn":
            fallback = sorted(artifacts, key=default_order)[0].precision
            print(
                f"warning: INT8 is {check.text}.\n  deploy serves {fallback} by default; "
                "--precision int8 deploys INT8 anyway",
                file=sys.stderr,
            )


def cmd_train(args: argparse.Namespace) -> int:
    """Train a classifier head for your own classes (one sub-folder per class) on a catalog
    featurizer, and register featurizer + head as one model: convert, deploy and score it next."""
    from accel_widgets.engine.train import train_classifier
    from accel_widgets.engine.train_data import TrainDataError

    if (args.folder is None) == (args.sample is None):
        raise TrainDataError(
            "give a training folder (one sub-folder per class) or --sample digits|lfw, not both"
        )
    workspace = _workspace(args)
    cancel = CancelToken()
    progress = TerminalProgress()
    try:
        result = train_classifier(
            args.name,
            args.folder,
            sample=args.sample,
            sample_per_class=args.per_class,
            featurizer=args.featurizer,
            weights=args.weights,
            size=args.size,
            holdout=args.holdout,
            seed=args.seed,
            epochs=args.epochs,
            patience=args.patience,
            augment=args.augment,
            workspace=workspace,
            progress=progress,
            cancel=cancel,
        )
    except KeyboardInterrupt:
        cancel.cancel()
        raise
    finally:
        progress.close()
    report = result.report
    held = report["holdout"]
    print(
        f"\ntrained {result.model.ref}: {len(report['classes'])} classes on "
        f"{report['featurizer']['title']} ({report['featurizer']['weights']} weights, "
        f"{report['featurizer']['size']} px)"
    )
    print(
        f"held-out accuracy: {held['accuracy']:.3f} on {held['n_images']} images "
        f"(stopped after {report['head']['epochs_run']} epochs, "
        f"kept epoch {report['head']['best_epoch']})"
    )
    rows: list[list[Any]] = [["class", "precision", "recall", "held out"]]
    rows += [
        [c["class"], f"{c['precision']:.3f}", f"{c['recall']:.3f}", c["support"]]
        for c in held["per_class"]
    ]
    print(_table(rows))
    print("\nconfusion matrix (rows: true class, columns: predicted)")
    classes = report["classes"]
    print(
        _table(
            [["", *classes], *[[c, *r] for c, r in zip(classes, held["confusion"], strict=True)]]
        )
    )
    print(
        f"\nnext: accel-widgets convert {result.model.name} --quantize int8   (calibrated on "
        f"its training split, checked on its held-out pictures)\n"
        f"      accel-widgets deploy {result.model.name}"
    )
    return SUCCESS


#: ``evaluate``'s exit status when it measured accuracy but some files could not be scored.
PARTIAL = 3


def cmd_evaluate(args: argparse.Namespace) -> int:
    """Top-1 / top-5 accuracy on labelled photos, with the photo count and a 95 % interval:
    each artifact of a model in this process, or through a running service (--service).
    Photos: one sub-folder per class (named by class index or label) or ImageNet files named
    WNID_*.JPEG; default: the shared labelled ImageNet photos for an ImageNet classifier.
    Exit status 0: every photo scored; 3: accuracy measured but some files were skipped
    (listed); 1: nothing could be measured."""
    from accel_widgets.engine.evaluate import evaluate

    workspace = _workspace(args)
    if args.model is None and args.service is None:
        raise AccelError("give a model (accel-widgets evaluate MODEL) or --service NAME")
    runs: list[dict[str, Any]] = []
    if args.service is not None:
        service = workspace.get_service(args.service)
        artifact = workspace.get_artifact_by_id(service.artifact_id)
        runs.append({"service": args.service})
        runs.insert(
            0,
            {
                "model": artifact.model_name,
                "version": artifact.model_version,
                "precision": artifact.precision,
            },
        )
    else:
        model = workspace.get_model(args.model, args.version)
        precisions = (
            [args.precision]
            if args.precision
            else [a.precision for a in workspace.list_artifacts(model)]
        )
        runs = [{"model": model.name, "version": model.version, "precision": p} for p in precisions]
    progress = TerminalProgress()
    results = []
    try:
        for run in runs:
            results.append(
                evaluate(
                    **run,
                    photos=args.photos,
                    runtime=args.runtime,
                    limit=args.limit,
                    workspace=workspace,
                    progress=progress,
                )
            )
    finally:
        progress.close()
    rows: list[list[Any]] = [
        ["model", "precision", "scored", "photos", "top-1 [95% interval]", "top-5", "p50 ms"]
    ]
    for r in results:
        rows.append(
            [
                r.model,
                r.precision,
                r.where,
                r.n,
                f"{r.top1:.3f} [{r.top1_ci95[0]:.3f}, {r.top1_ci95[1]:.3f}]",
                f"{r.top5:.3f} [{r.top5_ci95[0]:.3f}, {r.top5_ci95[1]:.3f}]",
                f"{r.p50_ms:.1f}",
            ]
        )
    print(_table(rows))
    print(f"photos: {results[0].photos}")
    skipped = results[0].skipped
    if skipped:
        print(f"\nskipped {len(skipped)} file(s):", file=sys.stderr)
        for item in skipped[:20]:
            print(f"  {item.name}: {item.reason}", file=sys.stderr)
        if len(skipped) > 20:
            print(f"  ... and {len(skipped) - 20} more", file=sys.stderr)
    if args.json:
        print(json.dumps([r.to_dict() for r in results], indent=2))
    return PARTIAL if skipped else SUCCESS


def cmd_register(args: argparse.Namespace) -> int:
    """Register a model of your own: an ONNX file, a Keras file or a SavedModel folder."""
    from pathlib import Path

    from accel_widgets.engine import register

    workspace = _workspace(args)
    progress = TerminalProgress()
    preprocessing = _preprocessing_arg(args.preprocessing) if args.preprocessing else None
    path = Path(args.path)
    common = {
        "workspace": workspace,
        "progress": progress,
        "labels": args.labels,
        "preprocessing": preprocessing,
    }
    if path.suffix == ".onnx":
        record = register.register_onnx(path, args.name, postprocess=args.postprocess, **common)
    elif path.is_dir():
        record = register.register_saved_model(path, args.name, **common)
    else:
        record = register.register_keras(str(path), args.name, **common)
    progress.close()
    print(f"registered {record.ref} ({record.kind}) in {workspace.root}")
    return SUCCESS


def _preprocessing_arg(text: str) -> dict[str, Any]:
    """``--preprocessing``: a preset name (caffe, torch, tf) or a JSON object."""
    from accel_widgets.preprocess import PRESETS

    if text in PRESETS:
        return {"preset": text}
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise AccelError(
            f"--preprocessing must be a preset ({', '.join(PRESETS)}) or a JSON object such as "
            f'\'{{"preset": "caffe", "layout": "NCHW"}}\'; got {text!r} ({exc.msg})'
        ) from None
    if not isinstance(value, dict):
        raise AccelError(f"--preprocessing must be a JSON object; got {text!r}")
    return value


def cmd_list(args: argparse.Namespace) -> int:
    """Models, versions and converted artifacts in the workspace, with their reports."""
    workspace = _workspace(args)
    models = workspace.list_models()
    if not models:
        print(f"The workspace {workspace.root} is empty: try `accel-widgets convert resnet50`.")
        return SUCCESS
    rows: list[list[Any]] = [["model", "kind", "artifacts", "check", "created"]]
    import time

    from accel_widgets.engine.verdicts import artifact_check
    from accel_widgets.engine.workspace import default_order

    for model in models:
        artifacts = workspace.list_artifacts(model)
        checks = []
        for a in sorted(artifacts, key=default_order):
            check = artifact_check(a.report, a.precision)
            accuracy = a.report.get("accuracy")
            figures = f" top-1 {accuracy['top1']:.3f} (n={accuracy['n']})" if accuracy else ""
            mark = f" {check.symbol}" if check.symbol else ""
            words = " not recommended" if check.mark == "warn" else ""
            checks.append(f"{a.precision}{mark}{figures}{words}")
        rows.append(
            [
                model.ref,
                model.kind,
                ", ".join(f"{a.precision} {a.size_bytes / 2**20:.1f} MB" for a in artifacts) or "-",
                "; ".join(checks) or "-",
                time.strftime("%Y-%m-%d %H:%M", time.localtime(model.created_at)),
            ]
        )
    print(_table(rows))
    if args.json:
        print(
            json.dumps(
                [
                    {
                        "model": m.ref,
                        "artifacts": [
                            {"precision": a.precision, "path": str(a.file), "report": a.report}
                            for a in workspace.list_artifacts(m)
                        ],
                    }
                    for m in models
                ],
                indent=2,
            )
        )
    return SUCCESS


def cmd_delete(args: argparse.Namespace) -> int:
    """Delete a service, an image or a model (in that order: services first)."""
    workspace = _workspace(args)
    if args.kind == "model":
        deleted = workspace.delete_model(args.name, args.version)
        print("deleted " + ", ".join(m.ref for m in deleted))
    elif args.kind == "image":
        from accel_widgets.engine.package import delete_image

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


def _mask(key: str | None) -> str:
    from accel_widgets.engine.keys import mask_key

    return mask_key(key)


def cmd_deploy(args: argparse.Namespace) -> int:
    """Deploy a converted model as a gRPC service and wait until it answers."""
    from accel_widgets.engine.targets import deploy, get_target

    target = get_target(args.target)
    given = _given_settings(args, target)
    progress = TerminalProgress()
    workspace = _workspace(args)
    try:
        service = deploy(
            args.model,
            version=args.version,
            precision=args.precision,
            name=args.name,
            target=target.name,
            image=args.image,
            workspace=workspace,
            progress=progress,
            settings=given,
        )
    finally:
        progress.close()
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
        f"key       {service.key if args.show_key else _mask(service.key)}"
        + ("  (--show-key prints it)" if service.key and not args.show_key else "")
    )
    print(f"ready in  {service.info.get('ready_seconds')} s")
    print(f"score it  accel-widgets score {service.name} path/to/image.jpg")
    _warn_if_unproven(service, workspace)
    return SUCCESS


def _warn_if_unproven(service, workspace) -> None:
    """Say on stderr when the artifact served was not recommended by its checks."""
    from accel_widgets.engine.verdicts import artifact_check

    artifact = workspace.get_artifact_by_id(service.artifact_id)
    check = artifact_check(artifact.report, artifact.precision)
    if check.mark == "warn":
        print(f"warning: it serves {artifact.precision}, which is {check.text}", file=sys.stderr)


def _secret_note(obj: dict[str, Any], where: str) -> str:
    """Where a generated Secret's API key is written down, and how to read it back."""
    meta = obj.get("metadata", {})
    name, namespace = meta.get("name", "?"), meta.get("namespace", "default")
    field = next(iter(obj.get("stringData") or {}), "api-keys")
    return (
        f"{where} holds the service's new API key, in field stringData.{field} of the "
        f"Secret {name}; it is written down nowhere else (not in the workspace). Clients "
        f"send it as 'authorization: Bearer KEY'. Once applied, read it back with: kubectl "
        f"get secret {name} -n {namespace} -o jsonpath='{{.data.{field}}}' | base64 -d. "
        "Keep it out of version control, or use a secret manager (for GitOps: "
        "sealed-secrets, external-secrets); --no-auth leaves it out."
    )


def cmd_manifests(args: argparse.Namespace) -> int:
    """Write the objects a target would create (YAML for kubectl apply or GitOps)."""
    import yaml

    from accel_widgets.engine.targets import get_target, manifests
    from accel_widgets.engine.workspace import write_private

    target = get_target(args.target)
    given = _given_settings(args, target)
    objects = manifests(
        args.model,
        version=args.version,
        precision=args.precision,
        name=args.name,
        target=target.name,
        image=args.image,
        workspace=_workspace(args),
        settings=given,
    )
    secrets = [obj for obj in objects if obj.get("kind") == "Secret"]
    if not args.out:
        documents = []
        for obj in objects:
            text = yaml.safe_dump(obj, sort_keys=False)
            if obj.get("kind") == "Secret":
                note = _secret_note(obj, "This Secret")
                text = "".join(f"# {line}\n" for line in _wrapped(note)) + text
            documents.append(text)
        print("---\n".join(documents), end="")
        for obj in secrets:
            print(f"note: {_secret_note(obj, 'The Secret in the output above')}", file=sys.stderr)
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
            note = _secret_note(obj, str(path))
            write_private(path, "".join(f"# {line}\n" for line in _wrapped(note)) + text)
            notes.append(note)
        else:
            path.write_text(text)
        print(f"wrote {path}")
    print(f"apply with: kubectl apply -f {folder}")
    for note in notes:
        print(note)
    return SUCCESS


def _wrapped(text: str) -> list[str]:
    import textwrap

    return textwrap.wrap(text, 96)


def cmd_package(args: argparse.Namespace) -> int:
    """Build a container image holding a converted model (and push or save it)."""
    from accel_widgets.engine.package import package

    progress = TerminalProgress()
    cancel = CancelToken()
    try:
        image = package(
            args.model,
            args.version,
            args.precision,
            name=args.name,
            base=args.base,
            push=args.push,
            save=args.save,
            no_cache=args.no_cache,
            workspace=_workspace(args),
            progress=progress,
            cancel=cancel,
        )
    except KeyboardInterrupt:
        cancel.cancel()
        raise
    finally:
        progress.close()
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
    from accel_widgets.engine.package import list_images

    statuses = list_images(_workspace(args))
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
    print(_table(rows))
    return SUCCESS


def cmd_logs(args: argparse.Namespace) -> int:
    """The last log lines of a service, wherever it runs."""
    from accel_widgets.engine.targets import service_logs

    text = service_logs(args.service, lines=args.lines, workspace=_workspace(args))
    print(text or f"(service {args.service} has no log lines)")
    return SUCCESS


def cmd_sample(args: argparse.Namespace) -> int:
    """Download the real pretrained sample model (SqueezeNet 1.1, 2.4 MB) and its ImageNet
    labels from their public addresses, verify their sha256, and keep them where the walk
    looks (~/.cache/accel-widgets/weights, or the first folder of $ACCEL_WIDGETS_WEIGHTS_DIR)."""
    from accel_widgets.engine.labels import WEIGHTS_DIR_ENV, weights_dirs
    from accel_widgets.engine.sample_model import SAMPLE_FILES, download_sample

    if args.list:
        for file in SAMPLE_FILES:
            print(f"{file.name}  {file.size} bytes  sha256 {file.sha256[0]}\n  {file.url}")
        return SUCCESS
    progress = TerminalProgress()
    try:
        path = download_sample(args.folder, base_url=args.url, progress=progress)
    finally:
        progress.close()
    print(f"the sample model is ready: {path} (and {SAMPLE_FILES[1].name}, sha256 verified)")
    if path.parent.resolve() not in {d.resolve() for d in weights_dirs()}:
        print(f"the walk does not look there: export {WEIGHTS_DIR_ENV}={path.parent}")
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
    from accel_widgets.engine.client import client_from_service
    from accel_widgets.engine.scoring import score, service_labels

    workspace = _workspace(args)
    service = _scorable(workspace, args.service)
    labels = service_labels(service, workspace)
    if args.sample:
        from accel_widgets.engine.samples import sample_photos

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
    print(_table(rows))
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

    from accel_widgets.engine.client import client_from_service
    from accel_widgets.engine.detection import detections_from_outputs
    from accel_widgets.engine.ssd_decode import DETECTION_OUTPUTS

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
    print(_table(rows) if found else "no objects found (score threshold 0.5)")
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

    workspace = _workspace(args)
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
                s.key if args.show_keys else _mask(s.key),
            ]
        )
    print(_table(rows))
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
    print(_table(rows))
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


#: Where a target setting's flag lands in the parsed arguments: a namespace of its own, so a
#: setting can never overwrite a command's own argument (``args.version``, ``args.image``).
SETTING_DEST = "setting__"


def _given_settings(args: argparse.Namespace, target, skip: Sequence[str] = ()) -> dict[str, Any]:
    """The target settings given on the command line, as one mapping; a flag the target
    does not take is refused with the flags it does take."""
    given = {
        s.name: getattr(args, SETTING_DEST + s.name, None)
        for s in _target_settings()
        if s.name not in skip
    }
    given = {k: v for k, v in given.items() if v is not None}
    unknown = [k for k in given if k not in target._names()]
    if unknown:
        flags = ", ".join("--" + k.replace("_", "-") for k in unknown)
        offered = ", ".join(s.flag for s in target.settings if s.ui) or "none"
        raise AccelError(
            f"{flags} is not a setting of the {target.name} target; its settings: {offered}"
        )
    return given


def _target_names() -> tuple[str, ...]:
    from accel_widgets.engine.targets import target_names

    return target_names()


def _target_settings() -> list:
    """Every target's command-line settings, each name once (targets share host, port...)."""
    from accel_widgets.engine.targets import targets

    seen: dict[str, Any] = {}
    for target in targets():
        for setting in target.settings:
            if setting.ui:
                seen.setdefault(setting.name, setting)
    return list(seen.values())


def _add_target_settings(parser: argparse.ArgumentParser, skip: Sequence[str] = ()) -> None:
    """``deploy`` flags from what the targets declare: a new target needs no edit here."""
    from accel_widgets.engine.targets import targets

    group = parser.add_argument_group("target settings")
    for setting in _target_settings():
        if setting.name in skip:
            continue
        users = [t.name for t in targets() if setting.name in t._names()]
        help_text = f"{setting.help} [{', '.join(users)}]"
        dest = SETTING_DEST + setting.name
        if setting.type is bool:
            flags = group.add_mutually_exclusive_group()
            flags.add_argument(
                setting.flag, dest=dest, action="store_true", default=None, help=help_text
            )
            flags.add_argument("--no-" + setting.flag[2:], dest=dest, action="store_false")
        else:
            group.add_argument(
                setting.flag,
                dest=dest,
                metavar=setting.name.upper(),
                type=setting.type,
                default=None,
                choices=setting.choices or None,
                help=help_text,
            )


Handler = Callable[[argparse.Namespace], int]
COMMANDS: dict[str, tuple[Handler, str]] = {
    "models": (cmd_models, "List the model catalog."),
    "quota": (cmd_quota, "Check capacity (local machine or an Azure region)."),
    "convert": (cmd_convert, "Build, register, convert to ONNX, validate and quantize a model."),
    "register": (cmd_register, "Register your own ONNX, Keras or SavedModel model."),
    "train": (cmd_train, "Train a classifier for your own classes on a catalog featurizer."),
    "evaluate": (cmd_evaluate, "Measure top-1 / top-5 accuracy on labelled photos."),
    "list": (cmd_list, "List workspace models and converted artifacts."),
    "deploy": (cmd_deploy, "Deploy a converted model as a gRPC service."),
    "score": (cmd_score, "Score an image with a deployed service."),
    "services": (cmd_services, "List services and their health."),
    "room": (cmd_room, "Every service on this machine: memory, CPU, idle time; stop idle ones."),
    "logs": (cmd_logs, "Show a service's last log lines."),
    "package": (cmd_package, "Build a container image holding a converted model."),
    "manifests": (cmd_manifests, "Write the objects a target would create, as YAML."),
    "images": (cmd_images, "List packaged images."),
    "targets": (cmd_targets, "List deployment targets and their settings."),
    "sample": (cmd_sample, "Download and verify the real pretrained sample model (2.4 MB)."),
    "delete": (cmd_delete, "Delete a service, image or model."),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="accel-widgets",
        description="Deploy image models as ultra-low-latency gRPC services.",
    )
    parser.add_argument(
        "--workspace",
        help="workspace folder (default: $ACCEL_WIDGETS_WORKSPACE "
        "or ~/.local/share/accel-widgets/workspace)",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    parsers = {
        name: sub.add_parser(name, help=summary, description=handler.__doc__)
        for name, (handler, summary) in COMMANDS.items()
    }

    p = parsers["quota"]
    p.add_argument(
        "--target",
        default="local",
        help=f"a deployment target ({', '.join(_target_names())}) or azure (a family's quota)",
    )
    p.add_argument("--region", default="eastus")
    p.add_argument("--family", default="standardPBSFamily")
    p.add_argument("--needed", type=int, default=6, help="vCPUs a deployment needs (azure)")
    p.add_argument("--subscription", help="Azure subscription id ($AZURE_SUBSCRIPTION_ID)")
    p.add_argument(
        "--model",
        help="check for this model (workspace or catalog name): a cluster sizes its pods from "
        "it, this machine sets its serving memory beside the services already running here",
    )
    _add_target_settings(p, skip=("subscription", "host", "port", "auth", "ready_timeout"))

    p = parsers["convert"]
    p.add_argument("model", help="catalog name (see `models`) or a registered model")
    p.add_argument(
        "--weights", default="imagenet", help="imagenet (default), random, or a Keras weights file"
    )
    p.add_argument("--name", help="workspace name (default: the catalog name)")
    p.add_argument("--quantize", choices=["int8"], help="also make a static INT8 model")
    p.add_argument(
        "--calibration",
        help="folder of typical images for INT8 calibration (default: photos kept apart "
        "from the validation photos)",
    )
    p.add_argument(
        "--validation",
        help="folder of photos to check on; labelled (one sub-folder per class, or ImageNet "
        "WNID_*.JPEG files) to measure accuracy (default: the shared labelled ImageNet photos "
        "for an ImageNet classifier)",
    )
    p.add_argument(
        "--calibration-method",
        default="minmax",
        choices=["minmax", "entropy", "percentile"],
        help="how INT8 ranges are chosen (default minmax)",
    )

    p = parsers["register"]
    p.add_argument("path", help="an .onnx file, a .keras/.h5 file or a SavedModel folder")
    p.add_argument("name", help="workspace name (lowercase)")
    p.add_argument("--labels", default="imagenet", help="imagenet, voc or a labels file")
    p.add_argument(
        "--preprocessing",
        help="a preset (caffe: BGR minus the ImageNet mean; torch: RGB/255, mean, std; tf: "
        'RGB to -1..1) or JSON, e.g. \'{"preset": "caffe", "layout": "NCHW"}\' (default: '
        "recognised files get what they were trained with; others raw RGB 0..255)",
    )
    p.add_argument("--postprocess", default="flatten", choices=["flatten", "softmax", "none"])

    p = parsers["train"]
    p.add_argument("name", help="workspace name of the trained model (lowercase)")
    p.add_argument("folder", nargs="?", help="a folder with one sub-folder of images per class")
    p.add_argument("--sample", choices=["digits", "lfw"], help="a bundled demo set instead")
    p.add_argument("--per-class", type=int, help="with --sample: the first N images of each class")
    p.add_argument("--featurizer", default="resnet50", help="catalog classifier (default resnet50)")
    p.add_argument(
        "--weights", default="imagenet", help="imagenet (default), random, or a Keras weights file"
    )
    p.add_argument("--size", type=int, help="featurizer input in pixels (default: the catalog's)")
    p.add_argument("--holdout", type=float, default=0.2, help="share of each class held out")
    p.add_argument("--seed", type=int, default=0, help="seed of the split and of the head")
    p.add_argument("--epochs", type=int, default=60)
    p.add_argument("--patience", type=int, default=6, help="early stopping: epochs without gain")
    p.add_argument("--augment", action="store_true", help="also train on mirror images")

    p = parsers["list"]
    p.add_argument("--json", action="store_true", help="also print the full reports as JSON")

    p = parsers["evaluate"]
    p.add_argument("model", nargs="?", help="a workspace model (not needed with --service)")
    p.add_argument(
        "--photos",
        help="labelled photos: one sub-folder per class, or ImageNet WNID_*.JPEG files "
        "(default: the shared labelled ImageNet photos, for an ImageNet classifier)",
    )
    p.add_argument("--precision", choices=["int8", "fp32", "fp16"], help="default: every one")
    p.add_argument("--version", type=int, help="model version (default: latest)")
    p.add_argument("--service", help="also score through this running service")
    p.add_argument(
        "--runtime",
        default="onnxruntime",
        choices=["onnxruntime", "openvino", "auto"],
        help="in-process runtime (default onnxruntime)",
    )
    p.add_argument("--limit", type=int, help="score only the first N photos")
    p.add_argument("--json", action="store_true", help="also print each photo's answer as JSON")

    p = parsers["deploy"]
    p.add_argument("model", help="a workspace model with a converted artifact")
    p.add_argument("--target", default="local", help=f"where it runs: {', '.join(_target_names())}")
    p.add_argument("--name", help="service name (default: the model name)")
    p.add_argument("--version", type=int, help="model version (default: latest)")
    p.add_argument(
        "--precision",
        choices=["int8", "fp32", "fp16"],
        help="which artifact (default: the best that passed its checks: a recommended int8, "
        "else the float model)",
    )
    p.add_argument(
        "--image", help="image NAME[:VERSION] for targets that run one (default: the newest)"
    )
    _add_target_settings(p)
    p.add_argument("--show-key", action="store_true", help="print the whole API key")

    p = parsers["manifests"]
    p.add_argument("model", help="a workspace model with a converted artifact")
    p.add_argument("--target", default="kubernetes", help="kubernetes (default) or kserve")
    p.add_argument("--name", help="service name (default: the model name)")
    p.add_argument("--version", type=int, help="model version (default: latest)")
    p.add_argument("--precision", choices=["int8", "fp32", "fp16"], help="default: int8 if any")
    p.add_argument("--image", help="REGISTRY/PATH:TAG the cluster pulls (default: the last push)")
    p.add_argument("--out", help="a folder for one YAML file per object (default: stdout)")
    _add_target_settings(p)

    p = parsers["package"]
    p.add_argument("model", help="a workspace model with a converted artifact")
    p.add_argument("--version", type=int, help="model version (default: latest)")
    p.add_argument("--precision", choices=["int8", "fp32", "fp16"], help="default: int8 if any")
    p.add_argument("--name", help="image name (default: the model name)")
    p.add_argument(
        "--base",
        help="base image with Python 3 (default: $ACCEL_WIDGETS_BASE_IMAGE, else "
        "python:3.11-slim-bookworm; with no registry, make one with "
        "scripts/make_base_image.sh and pass local/debian-py:bookworm)",
    )
    p.add_argument("--push", metavar="REGISTRY/PATH", help="also push, e.g. 127.0.0.1:5000/models")
    p.add_argument("--save", metavar="FILE.tar", help="also write an archive (docker load -i)")
    p.add_argument("--no-cache", action="store_true", help="rebuild every layer")

    p = parsers["logs"]
    p.add_argument("service", help="a service name (see `services`)")
    p.add_argument("--lines", type=int, default=50)

    p = parsers["score"]
    p.add_argument("service", help="a service name (see `services`)")
    p.add_argument("image", nargs="?", help="a JPEG or PNG file")
    p.add_argument("--sample", help="a bundled photo instead: chelsea (cat), coffee, rocket...")
    p.add_argument("--top", type=int, default=5)
    p.add_argument("--repeat", type=int, default=1, help="score N times and report p50")

    p = parsers["services"]
    p.add_argument("--show-keys", action="store_true", help="print whole API keys")

    p = parsers["room"]
    p.add_argument(
        "--stop-idle",
        type=float,
        metavar="SECONDS",
        help="stop the local services idle for at least this long (asks first)",
    )
    p.add_argument("--yes", action="store_true", help="do not ask before stopping")
    p.add_argument("--json", action="store_true", help="print the services as JSON")

    p = parsers["sample"]
    p.add_argument(
        "--folder",
        help="where to put it (default: first of $ACCEL_WIDGETS_WEIGHTS_DIR, else "
        "~/.cache/accel-widgets/weights)",
    )
    p.add_argument(
        "--url", help="a mirror serving the same files by name ($ACCEL_WIDGETS_SAMPLE_URL)"
    )
    p.add_argument("--list", action="store_true", help="print the files, addresses, checksums")

    p = parsers["delete"]
    p.add_argument("kind", choices=["service", "image", "model"])
    p.add_argument("name")
    p.add_argument("--version", type=int, help="one version only (images and models)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return USAGE
    handler = COMMANDS[args.command][0]
    try:
        return handler(args)
    except CancelledError as exc:
        print(f"\ncancelled: {exc}", file=sys.stderr)
        return INTERRUPTED
    except KeyboardInterrupt:
        print("\ncancelled by the user", file=sys.stderr)
        return INTERRUPTED
    except AccelError as exc:
        # Some errors carry the same advice in command-line words (--weights random).
        print(f"error: {getattr(exc, 'cli_message', None) or exc}", file=sys.stderr)
        return ERROR


if __name__ == "__main__":
    sys.exit(main())
