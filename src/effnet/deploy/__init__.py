"""Getting a trained network out of PyTorch and into the runtimes users deploy on.

``export/``: ONNX (checked against torch before it is written, metadata through the one
writer ``runtime.onnx_metadata``; dynamic or static graphs, in-graph preprocessing or NV12
input), LiteRT/TFLite (fp32 and int8), ExecuTorch, Triton model repositories, and the
calibration set vendor NPU compilers read. ``quantize/``: static int8 post-training quantization of an
exported file for onnxruntime, in steps (calibration, weight scales, sensitivity, report)
joined by ``quantize.pipeline``, and for OpenVINO (``quantize.openvino``, NNCF).
``cache.py``: the compiled-engine cache behind ``--engine auto`` (one export per model and
weights).

This floor sits above ``runtime`` (it opens sessions and reads engines) and below ``tasks``
(the commands only parse options, call in here and print).
"""
