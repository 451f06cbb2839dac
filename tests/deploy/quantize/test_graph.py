"""The float graph: checks on the file, value-preserving rewrites, and the layers found."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest

from effnet.deploy.quantize.graph import find_layers, fix_input_size, load_float_model, prepare_graph
from effnet.deploy.quantize.recipe import QuantizeError
from effnet.deploy.quantize.sessions import session
from effnet.runtime.onnx_metadata import INPUT_RGB, write_metadata


def test_prepare_graph_keeps_values(tiny_graph) -> None:
    """ReduceMean over H, W -> GlobalAveragePool (+ Flatten): same logits."""
    model = tiny_graph()
    x = np.random.default_rng(0).standard_normal((2, 3, 32, 32)).astype(np.float32)
    before = session(model).run(None, {"input": x})[0]
    prepared = prepare_graph(model)
    assert "ReduceMean" not in {node.op_type for node in prepared.graph.node}
    np.testing.assert_allclose(session(prepared).run(None, {"input": x})[0], before, rtol=1e-5, atol=1e-5)


def test_fix_input_size_pins_height_and_width_only(tiny_graph) -> None:
    fixed = fix_input_size(prepare_graph(tiny_graph()), 24)
    dims = [d.dim_value or d.dim_param for d in fixed.graph.input[0].type.tensor_type.shape.dim]
    assert dims[1:] == [3, 24, 24] and isinstance(dims[0], str)
    with pytest.raises(QuantizeError, match="fixed at 24x24, not 32x32"):
        fix_input_size(fixed, 32)


def test_layers_are_the_convs_and_the_classifier_with_their_activations(tiny_graph) -> None:
    layers = {layer.name: layer for layer in find_layers(fix_input_size(prepare_graph(tiny_graph()), 32))}
    assert set(layers) == {"conv_a", "conv_dw", "conv_b", "conv_c", "classifier"}
    assert layers["conv_a"].nodes == ["conv_a", "clip_a"] and layers["conv_b"].nodes == ["conv_b", "relu_b"]
    assert layers["conv_dw"].kind == "depthwise 3x3" and layers["classifier"].kind == "classifier"
    # weights and multiply-adds from the shapes at 32x32 (conv_a: stride 2 -> 16x16 outputs)
    assert (layers["conv_a"].weights, layers["conv_a"].macs) == (16 * 3 * 3 * 3, 16 * 16 * 16 * 3 * 3 * 3)
    assert (layers["classifier"].weights, layers["classifier"].macs) == (160, 160)


def test_bad_files_are_one_line_errors(tmp_path: Path, tiny_graph) -> None:
    not_onnx = tmp_path / "model.onnx"
    not_onnx.write_text("hello, I am a text file")
    with pytest.raises(QuantizeError, match="not an ONNX model"):
        load_float_model(not_onnx)
    with pytest.raises(QuantizeError, match="model file not found"):
        load_float_model(tmp_path / "missing.onnx")
    old = tmp_path / "old.onnx"
    onnx.save(tiny_graph(opset=11), str(old))
    with pytest.raises(QuantizeError, match="opset 11 is not supported"):
        load_float_model(old)
    images = tmp_path / "images.onnx"
    onnx.save(write_metadata(tiny_graph(), {"arch": "tiny_test", "input": INPUT_RGB}), str(images))
    with pytest.raises(QuantizeError, match="has preprocessing inside"):
        load_float_model(images)
