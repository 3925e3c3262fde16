"""accel-widgets: deploy image models as ultra-low-latency gRPC services from JupyterLab.

The engine (``accel_widgets.engine``) is plain Python and imports no UI code; the
serving process (``accel_widgets.serving``) imports neither TensorFlow nor Jupyter.
"""

from accel_widgets.errors import AccelError
from accel_widgets.progress import CancelToken, ProgressEvent

__version__ = "0.1.0"

__all__ = ["AccelError", "CancelToken", "ProgressEvent", "__version__"]
