"""Getting a trained network out of PyTorch and into the runtimes users deploy on.

``export/``: ONNX (checked against torch before it is written, metadata through the one
writer ``runtime.onnx_metadata``), in-graph preprocessing, and Triton model repositories.
``quantize/``: static int8 post-training quantization of an exported file, in steps
(calibration, weight scales, sensitivity, report) joined by ``quantize.pipeline``.

This floor sits above ``runtime`` (it opens sessions and reads engines) and below ``tasks``
(the commands only parse options, call in here and print).
"""
