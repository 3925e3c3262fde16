"""The parser and the entry point: each command is a function in :data:`COMMANDS`."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence

from accel_widgets.cli.models import (
    cmd_convert,
    cmd_evaluate,
    cmd_list,
    cmd_models,
    cmd_register,
    cmd_sample,
    cmd_train,
)
from accel_widgets.cli.output import ERROR, INTERRUPTED, USAGE
from accel_widgets.cli.services import (
    cmd_delete,
    cmd_deploy,
    cmd_images,
    cmd_logs,
    cmd_manifests,
    cmd_package,
    cmd_quota,
    cmd_room,
    cmd_score,
    cmd_services,
    cmd_targets,
)
from accel_widgets.cli.settings import (
    add_target_settings,
    chosen_target,
    default_target,
    manifest_targets,
    target_names,
)
from accel_widgets.errors import AccelError, CancelledError

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


def build_parser(argv: Sequence[str] | None = None) -> argparse.ArgumentParser:
    """The command line; ``argv`` (when given) picks the target whose settings ``--help``
    shows for ``deploy``, ``manifests`` and ``quota``."""
    from accel_widgets.engine.targets.quota import quota_targets

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
        default=default_target(),
        help=f"a deployment target or a capacity check: {', '.join(quota_targets())}",
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
    add_target_settings(p, chosen_target(argv, "quota", default_target()), for_capacity=True)

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
    p.add_argument(
        "--target",
        default=default_target(),
        help=f"where it runs: {', '.join(target_names())} (default: the first)",
    )
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
    add_target_settings(p, chosen_target(argv, "deploy", default_target()))
    p.add_argument("--show-key", action="store_true", help="print the whole API key")

    p = parsers["manifests"]
    p.add_argument("model", help="a workspace model with a converted artifact")
    makers = manifest_targets()
    p.add_argument(
        "--target",
        default=makers[0] if makers else None,
        help=f"a target that writes objects: {', '.join(makers)} (default: the first)",
    )
    p.add_argument("--name", help="service name (default: the model name)")
    p.add_argument("--version", type=int, help="model version (default: latest)")
    p.add_argument("--precision", choices=["int8", "fp32", "fp16"], help="default: int8 if any")
    p.add_argument("--image", help="REGISTRY/PATH:TAG the cluster pulls (default: the last push)")
    p.add_argument("--out", help="a folder for one YAML file per object (default: stdout)")
    add_target_settings(p, chosen_target(argv, "manifests", makers[0] if makers else None))

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
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = build_parser(argv)
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
