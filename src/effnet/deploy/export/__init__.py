"""Export a network to the formats deployments run: ONNX (``onnx``), with preprocessing
as ONNX ops in front of it (``preprocessing_graph``), laid out for Triton (``triton``)."""
