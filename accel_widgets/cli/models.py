"""The walk's first steps on the command line: the catalog, registering your own model, the
sample, build and convert, accuracy on labelled photos, training, and the workspace list."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from accel_widgets.cli.output import (
    PARTIAL,
    SUCCESS,
    live_progress,
    print_reports,
    table,
    workspace_of,
)
from accel_widgets.errors import AccelError


def cmd_models(args: argparse.Namespace) -> int:
    """List the model catalog, one line a model."""
    from accel_widgets.engine.models.catalog import list_specs

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
    print(table(rows))
    return SUCCESS


def cmd_register(args: argparse.Namespace) -> int:
    """Register a model of your own: an ONNX file, a Keras file or a SavedModel folder."""
    from pathlib import Path

    from accel_widgets.engine.models import register

    workspace = workspace_of(args)
    with live_progress() as (progress, cancel):
        preprocessing = preprocessing_arg(args.preprocessing) if args.preprocessing else None
        path = Path(args.path)
        common = {
            "workspace": workspace,
            "progress": progress,
            "cancel": cancel,
            "labels": args.labels,
            "preprocessing": preprocessing,
        }
        if path.suffix == ".onnx":
            record = register.register_onnx(path, args.name, postprocess=args.postprocess, **common)
        elif path.is_dir():
            record = register.register_saved_model(path, args.name, **common)
        else:
            record = register.register_keras(str(path), args.name, **common)
    print(f"registered {record.ref} ({record.kind}) in {workspace.root}")
    return SUCCESS


def preprocessing_arg(text: str) -> dict[str, Any]:
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


def cmd_sample(args: argparse.Namespace) -> int:
    """Download the real pretrained sample model (SqueezeNet 1.1, 2.4 MB) and its ImageNet
    labels from their public addresses, verify their sha256, and keep them where the walk
    looks (~/.cache/accel-widgets/weights, or the first folder of $ACCEL_WIDGETS_WEIGHTS_DIR)."""
    from accel_widgets.engine.models.labels import WEIGHTS_DIR_ENV, weights_dirs
    from accel_widgets.engine.models.sample_model import SAMPLE_FILES, download_sample

    if args.list:
        for file in SAMPLE_FILES:
            print(f"{file.name}  {file.size} bytes  sha256 {file.sha256[0]}\n  {file.url}")
        return SUCCESS
    with live_progress() as (progress, cancel):
        path = download_sample(args.folder, base_url=args.url, progress=progress, cancel=cancel)
    print(f"the sample model is ready: {path} (and {SAMPLE_FILES[1].name}, sha256 verified)")
    if path.parent.resolve() not in {d.resolve() for d in weights_dirs()}:
        print(f"the walk does not look there: export {WEIGHTS_DIR_ENV}={path.parent}")
    return SUCCESS


def cmd_convert(args: argparse.Namespace) -> int:
    """Build a catalog model (or take a registered one), convert it to ONNX, validate, quantize."""
    from accel_widgets.engine.conversion.convert import convert
    from accel_widgets.engine.models.catalog import CATALOG, get_spec, quantize_for

    workspace = workspace_of(args)
    quantize = args.quantize
    with live_progress() as (progress, cancel):
        # A registered model is looked up once and its record handed on (issue 23).
        record = None if args.model.lower() in CATALOG else workspace.find_model(args.model)
        if record is None:
            from accel_widgets.engine.models.build import build_model

            spec = get_spec(args.model)
            quantize = quantize_for(spec, quantize)
            record = build_model(
                spec,
                weights=args.weights,
                name=args.name,
                workspace=workspace,
                progress=progress,
                cancel=cancel,
            )
        artifacts = convert(
            record,
            quantize=quantize,
            workspace=workspace,
            calibration=args.calibration,
            validation=args.validation,
            calibration_method=args.calibration_method,
            progress=progress,
            cancel=cancel,
        )
    print_reports(artifacts)
    return SUCCESS


def cmd_evaluate(args: argparse.Namespace) -> int:
    """Top-1 / top-5 accuracy on labelled photos, with the photo count and a 95 % interval:
    each artifact of a model in this process, or through a running service (--service).
    Photos: one sub-folder per class (named by class index or label) or ImageNet files named
    WNID_*.JPEG; default: the shared labelled ImageNet photos for an ImageNet classifier.
    Exit status 0: every photo scored; 3: accuracy measured but some files were skipped
    (listed); 1: nothing could be measured."""
    from accel_widgets.engine.checks.evaluate import evaluate

    workspace = workspace_of(args)
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
    results = []
    with live_progress() as (progress, cancel):
        for run in runs:
            results.append(
                evaluate(
                    **run,
                    photos=args.photos,
                    runtime=args.runtime,
                    limit=args.limit,
                    workspace=workspace,
                    progress=progress,
                    cancel=cancel,
                )
            )
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
    print(table(rows))
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


def cmd_train(args: argparse.Namespace) -> int:
    """Train a classifier head for your own classes (one sub-folder per class) on a catalog
    featurizer, and register featurizer + head as one model: convert, deploy and score it next."""
    from accel_widgets.engine.training.train import train_classifier
    from accel_widgets.engine.training.train_data import TrainDataError

    if (args.folder is None) == (args.sample is None):
        raise TrainDataError(
            "give a training folder (one sub-folder per class) or --sample digits|lfw, not both"
        )
    workspace = workspace_of(args)
    with live_progress() as (progress, cancel):
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
    print(table(rows))
    print("\nconfusion matrix (rows: true class, columns: predicted)")
    classes = report["classes"]
    print(
        table([["", *classes], *[[c, *r] for c, r in zip(classes, held["confusion"], strict=True)]])
    )
    print(
        f"\nnext: accel-widgets convert {result.model.name} --quantize int8   (calibrated on "
        f"its training split, checked on its held-out pictures)\n"
        f"      accel-widgets deploy {result.model.name}"
    )
    return SUCCESS


def cmd_list(args: argparse.Namespace) -> int:
    """Models, versions and converted artifacts in the workspace, with their reports."""
    workspace = workspace_of(args)
    models = workspace.list_models()
    if not models:
        print(f"The workspace {workspace.root} is empty: try `accel-widgets convert resnet50`.")
        return SUCCESS
    rows: list[list[Any]] = [["model", "kind", "artifacts", "check", "created"]]
    import time

    from accel_widgets.engine.checks.verdicts import artifact_check
    from accel_widgets.engine.store.workspace import default_order

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
    print(table(rows))
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
