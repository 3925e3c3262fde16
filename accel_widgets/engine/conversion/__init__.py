"""Conversion: TensorFlow -> ONNX in a child process, INT8 quantization, validation and its
reports.
"""
