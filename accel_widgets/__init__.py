"""accel-widgets: deploy image models as ultra-low-latency gRPC services from JupyterLab.

The engine (``accel_widgets.engine``) is plain Python and imports no UI code; the
serving process (``accel_widgets.serving``) imports neither TensorFlow nor Jupyter.
"""

from accel_widgets.errors import AccelError
from accel_widgets.progress import CancelToken, ProgressEvent

__version__ = "0.1.0"

__all__ = ["AccelError", "CancelToken", "ProgressEvent", "__version__"]


def _jupyter_server_extension_points() -> list[dict[str, str]]:
    """The REST API behind the JupyterLab sidebar and launcher (jupyter_server looks here)."""
    return [{"module": "accel_widgets.server_extension"}]


def _jupyter_labextension_paths() -> list[dict[str, str]]:
    """The built JupyterLab extension inside the package (``accel_widgets/labextension``)."""
    return [{"src": "labextension", "dest": "accel-widgets"}]
