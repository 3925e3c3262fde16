"""Jupyter widgets for the walk, one per step, thin over the engine (see docs/ARCHITECTURE.md).

>>> from accel_widgets.widgets import Walkthrough
>>> Walkthrough(model="squeezenet")   # in a notebook cell
"""

from accel_widgets.widgets.cleanup import CleanupWidget
from accel_widgets.widgets.convert import ConvertWidget
from accel_widgets.widgets.deploy import DeployWidget
from accel_widgets.widgets.model import ModelWidget
from accel_widgets.widgets.package import PackageWidget
from accel_widgets.widgets.quota import QuotaWidget
from accel_widgets.widgets.score import ScoreWidget
from accel_widgets.widgets.train import ConvertTrainedWidget, TrainWalk, TrainWidget
from accel_widgets.widgets.walkthrough import Walkthrough

__all__ = [
    "CleanupWidget",
    "ConvertTrainedWidget",
    "ConvertWidget",
    "DeployWidget",
    "ModelWidget",
    "PackageWidget",
    "QuotaWidget",
    "ScoreWidget",
    "TrainWalk",
    "TrainWidget",
    "Walkthrough",
]
