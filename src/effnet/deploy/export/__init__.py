"""Export a network to the formats deployments run: ONNX (``onnx``; fixed-size graphs through
``static_graph``), with preprocessing as ONNX ops in front of it (``preprocessing_graph``, or
``nv12_graph`` for camera frames), LiteRT/TFLite (``tflite``, int8 recipe in ``tflite_int8``),
ExecuTorch (``executorch``), laid out for Triton (``triton``), and the calibration set for
vendor compilers (``calibration_dump``)."""
