"""What a check proves, in one place: agreement that means something, and INT8 that earns it.

Every ✓ the kit shows (the Convert step, ``accel-widgets list``, the sidebar) and the
precision ``deploy`` picks by default come from these rules, computed from the figures an
artifact's report stores, so the words and the marks cannot drift apart.

* **Agreement is informative** only when the reference answers with more than one class:
  a random-weight network gives every photo the same class, and then "top-1 agrees on 6/6"
  would hold for any candidate that does the same. At :data:`ONE_CLASS_SHARE` or more of the
  photos in one class, agreement is reported as not informative and earns no ✓.
* **An INT8 artifact is recommended** only when top-1 agrees with fp32 on at least
  :data:`AGREEMENT_MIN` of an informative set of validation photos *and*, measured on at least
  :data:`LABELLED_MIN` labelled photos, it loses at most :data:`LOSS_MAX_POINTS` points of top-1
  accuracy, calibrated on photos other than those it was validated on. Otherwise it is kept
  (``--precision int8`` still deploys it, with a warning) but not recommended, and the report
  says which of these it missed, with the figures.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import Any

AGREEMENT_MIN = 0.97
LOSS_MAX_POINTS = 1.0
LABELLED_MIN = 200
ONE_CLASS_SHARE = 0.9
#: A conversion matches its source when outputs differ by at most this share of the largest
#: output (measured: 1e-10 to 1e-5 for every catalog model; a wrong graph is off by 1e-1).
FAITHFUL_REL_DIFF = 1e-3


def uninformative(comparison: dict[str, Any]) -> str | None:
    """Why top-1 agreement in ``comparison`` (a ``validate.compare`` dict) proves nothing,
    or None when it is informative."""
    reference = comparison.get("reference_top1") or []
    if not reference:
        return "no photos were compared"
    cls, count = Counter(reference).most_common(1)[0]
    if count == len(reference):
        return (
            f"not informative: the reference gives all {len(reference)} photos the same "
            f"class ({cls}), so any model that does the same agrees"
        )
    if count / len(reference) >= ONE_CLASS_SHARE:
        return (
            f"not informative: the reference gives {count} of {len(reference)} photos the "
            f"same class ({cls})"
        )
    return None


def int8_gate(report: dict[str, Any], fp32_accuracy: dict[str, Any] | None) -> dict[str, Any]:
    """The recommendation for an INT8 artifact from its report (``vs_fp32``, ``accuracy``,
    ``calibration_disjoint``) and its float model's accuracy on the same photos.

    Returns a JSON-ready dict stored as the report's ``gate``: ``recommended``, ``reasons``
    (each a sentence with its figures; empty when recommended) and the figures it used.
    """
    cmp = report["vs_fp32"]
    reasons: list[str] = []
    agreement = cmp["top1_agreement"]
    why_not = uninformative(cmp)
    if why_not:
        reasons.append(f"top-1 agreement with fp32 is {why_not}")
    elif agreement < AGREEMENT_MIN:
        reasons.append(
            f"top-1 agrees with fp32 on {cmp['top1_agree_count']}/{cmp['n_images']} photos "
            f"({agreement:.1%}); {AGREEMENT_MIN:.0%} is needed"
        )
    change = None
    acc = report.get("accuracy")
    if acc and fp32_accuracy and acc["n"] == fp32_accuracy["n"]:
        change = round((acc["top1"] - fp32_accuracy["top1"]) * 100, 2)
        if acc["n"] < LABELLED_MIN:
            reasons.append(
                f"accuracy was measured on {acc['n']} labelled photos; {LABELLED_MIN} are "
                "needed to vouch for it (give a labelled folder as the validation photos)"
            )
        elif -change > LOSS_MAX_POINTS:
            reasons.append(
                f"top-1 accuracy {acc['top1']:.1%} against fp32's {fp32_accuracy['top1']:.1%}: "
                f"{-change:.1f} points lost, {LOSS_MAX_POINTS:.1f} allowed"
            )
    else:
        reasons.append(
            "no labelled photos to measure accuracy on (give a folder with one sub-folder "
            "per class, or ImageNet photos named WNID_*.JPEG, as the validation photos)"
        )
    if not report.get("calibration_disjoint", False):
        reasons.append("it was calibrated on the same photos it was validated on")
    return {
        "recommended": not reasons,
        "reasons": reasons,
        "agreement": agreement,
        "accuracy_change_points": change,
        "labelled_photos": acc["n"] if acc else 0,
        "rule": (
            f"agreement >= {AGREEMENT_MIN:.0%} on informative photos, <= {LOSS_MAX_POINTS:.1f} "
            f"point(s) of top-1 lost on >= {LABELLED_MIN} labelled photos, calibration photos "
            "disjoint from validation photos"
        ),
    }


def recommended(report: dict[str, Any], precision: str) -> bool:
    """Whether deploy may pick this artifact by default: float artifacts always (they are
    the reference), INT8 only when its gate passed. An INT8 artifact from before the gate
    existed has no verdict, so it is not recommended: its worth was never measured."""
    if precision != "int8":
        return True
    return bool((report.get("gate") or {}).get("recommended"))


@dataclass(frozen=True)
class Check:
    """What a UI shows for one artifact: ``mark`` is ``"ok"`` (✓), ``"warn"`` (⚠) or
    ``""`` (no mark: measured, nothing to vouch for), and the words beside it."""

    mark: str
    text: str

    @property
    def symbol(self) -> str:
        return {"ok": "✓", "warn": "⚠"}.get(self.mark, "")


def artifact_check(report: dict[str, Any], precision: str) -> Check:
    """The one verdict every screen shows for an artifact (see the module docstring)."""
    if gate := report.get("gate"):
        if gate["recommended"]:
            return Check("ok", "recommended: " + _int8_figures(report, gate))
        return Check("warn", "not recommended: " + "; ".join(gate["reasons"]))
    if precision == "int8" and "vs_fp32" in report:
        return Check("warn", "not recommended: checked before the INT8 rules; convert it again")
    if cmp := report.get("vs_tensorflow"):
        if "max_rel_diff" not in cmp and "match_iou" in cmp:
            return _detections_check(cmp)
        if cmp.get("max_rel_diff", 1.0) <= FAITHFUL_REL_DIFF:
            return Check(
                "ok",
                f"matches TensorFlow (max |difference| {cmp['max_abs_diff']:.1e} on "
                f"{cmp['n_images']} photos)",
            )
        return Check(
            "warn",
            f"differs from TensorFlow by up to {cmp['max_rel_diff']:.1%} of the largest output",
        )
    if acc := report.get("accuracy"):
        return Check("", f"registered as is; top-1 {acc['top1']:.3f} on {acc['n']} labelled photos")
    return Check("", "registered as is; no labelled photos to measure it on")


def _detections_check(cmp: dict[str, Any]) -> Check:
    """A detector's conversion, judged by its detections (``ssd_convert.detection_agreement``:
    boxes matched by class and IoU), since it has no one score vector to take a relative
    difference of."""
    n, same = cmp["n_images"], cmp["top1_agree_count"]
    if same == n:
        return Check(
            "ok",
            f"matches TensorFlow (every detection matched at IoU >= {cmp['match_iou']} on "
            f"{n} photos)",
        )
    return Check(
        "warn",
        f"detections differ from TensorFlow on {n - same} of {n} photos (recall "
        f"{cmp['recall']:.2f}, precision {cmp['precision']:.2f})",
    )


def _int8_figures(report: dict[str, Any], gate: dict[str, Any]) -> str:
    change = gate.get("accuracy_change_points")
    lost = f", {change:+.1f} points of top-1 on {gate['labelled_photos']} labelled photos"
    return f"agrees with fp32 on {gate['agreement']:.1%} of photos" + (
        lost if change is not None else ""
    )
