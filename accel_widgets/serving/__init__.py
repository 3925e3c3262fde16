"""The serving process: ONNX Runtime behind TF Serving's gRPC and REST APIs.

Run it with ``python -m accel_widgets.serving --config CONFIG.json`` (see
:mod:`accel_widgets.serving.config` for the file and :mod:`accel_widgets.serving.server` for
the life cycle). Nothing under this package imports TensorFlow, tf2onnx or Jupyter, so a
serving container stays small and starts in under a second.
"""
