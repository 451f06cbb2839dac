"""Static exports for NPU compilers: every opset 11-23 gives a graph with TF-"same" padding
folded into the convolutions (no Shape/Pad/shape arithmetic), only ops that exist at that
opset, and torch's logits (the reference: the same effnet module in torch)."""

from __future__ import annotations

import collections
from pathlib import Path

import numpy as np
import onnx
import onnxruntime
import pytest
import torch
from onnx import TensorProto, helper

from effnet.deploy.export.onnx import export, export_network
from effnet.deploy.export.static_graph import freeze_padding, ops_missing_at, static_to_onnx
from effnet.errors import UsageError
from effnet.models.network import build_model

#: what an EfficientNet static graph may hold (BatchNorm folded, Dropout/DropPath gone)
STATIC_OPS = {"Conv", "Sigmoid", "Mul", "Add", "Clip", "ReduceMean", "Gemm"}
#: tiny random nets with every padding convention and both activations (SiLU+SE, ReLU6)
TINY = {"width_mult": 0.25, "depth_mult": 0.25, "num_classes": 7}


def _tiny(arch: str, padding: str) -> torch.nn.Module:
    torch.manual_seed(0)
    return build_model(arch, padding=padding, **TINY).eval()


def _run(model: onnx.ModelProto, x: torch.Tensor) -> np.ndarray:
    session = onnxruntime.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run(None, {"input": x.numpy()})[0]


@pytest.mark.parametrize("opset", range(11, 24))
@pytest.mark.parametrize("arch", ["efficientnet_b0", "efficientnet_lite0"])
def test_every_opset_gives_a_static_graph_equal_to_torch(arch: str, opset: int) -> None:
    net = _tiny(arch, "tf_same")
    model = static_to_onnx(net, None, 65, opset, "logits")  # odd size: TF "same" pads asymmetrically
    assert [entry.version for entry in model.opset_import if entry.domain in ("", "ai.onnx")] == [opset]
    kinds = collections.Counter(node.op_type for node in model.graph.node)
    assert set(kinds) <= STATIC_OPS and kinds["Conv"] > 0
    assert not model.graph.initializer or all(t.data_type != TensorProto.INT64 or len(t.dims) <= 1
                                              for t in model.graph.initializer)
    assert ops_missing_at(model, opset) == []
    onnx.checker.check_model(model, full_check=True)
    x = torch.randn(3, 3, 65, 65, generator=torch.Generator().manual_seed(opset))
    with torch.inference_mode():
        expected = net(x).numpy()
    assert np.abs(_run(model, x) - expected).max() < 1e-4


@pytest.mark.parametrize("padding", ["tf_same", "tf_same_static", "symmetric"])
def test_frozen_pads_are_what_each_convention_pads_at_that_size(padding: str) -> None:
    net = _tiny("efficientnet_b0", padding)
    frozen = freeze_padding(net, 97)
    pads = {name: module.pads for name, module in frozen.named_modules() if hasattr(module, "pads")}
    if padding == "symmetric":
        assert pads == {}  # nothing to freeze: plain Conv2d pads
    else:
        # the stem at 97: TF "SAME" with kernel 3, stride 2 needs 2 rows in all, 1 before and 1 after;
        # at the nominal 224 (tf_same_static keeps 224's top/left) it is 0 before, 1 after
        assert pads["conv_stem"] == ((1, 1, 1, 1) if padding == "tf_same" else (0, 0, 2, 2))
    x = torch.randn(2, 3, 97, 97, generator=torch.Generator().manual_seed(1))
    with torch.inference_mode():
        assert torch.equal(frozen(x), net(x))
    graph = static_to_onnx(net, 1, 97, 11, "logits").graph
    stem = next(node for node in graph.node if node.op_type == "Conv" and node.input[0] == "input")
    (stem_pads,) = [list(attribute.ints) for attribute in stem.attribute if attribute.name == "pads"]
    assert stem_pads == list(pads.get("conv_stem", (1, 1, 1, 1)))  # ONNX order: top, left, bottom, right


def test_an_op_newer_than_the_opset_is_named() -> None:
    model = helper.make_model(helper.make_graph(
        [helper.make_node("Gelu", ["x"], ["y"])], "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])]), opset_imports=[helper.make_opsetid("", 20)])
    assert ops_missing_at(model, 11) == [("Gelu", 20)] and ops_missing_at(model, 20) == []


def test_low_opsets_fix_the_size_and_say_so(tmp_path: Path) -> None:
    said: list[str] = []
    net = _tiny("efficientnet_lite0", "tf_same")
    result = export_network(net, tmp_path / "l.onnx", opset=12, log=said.append)
    session = onnxruntime.InferenceSession(str(result.path), providers=["CPUExecutionProvider"])
    assert session.get_inputs()[0].shape == ["batch", 3, 224, 224]  # the plan's size, batch still dynamic
    assert said[0] == "opset 12: fixed size 224 (dynamic sizes need opset 18 or newer)"
    assert result.checks[0]["max_abs_diff"] < 1e-4


@pytest.mark.slow
@pytest.mark.parametrize("opset", range(11, 24))
@pytest.mark.parametrize("arch", ["efficientnet_b1", "efficientnet_b3", "efficientnet_lite4",
                                  "efficientnetv2_s", "efficientnetv2_b0"])
def test_every_family_at_every_opset(tmp_path: Path, arch: str, opset: int) -> None:
    torch.manual_seed(0)
    net = build_model(arch, padding="tf_same", num_classes=11).eval()
    result = export_network(net, tmp_path / "m.onnx", batch=1, size=96, opset=opset)  # checked inside
    assert {node.op_type for node in onnx.load(str(result.path)).graph.node} <= STATIC_OPS


def test_node_names_are_the_ones_vendor_configs_use() -> None:
    # RDK X5's EfficientNet_B2_config.yaml (node_info) keeps these B2 nodes in int16 by name
    rdk_node_info = ["/blocks/blocks.5/blocks.5.0/conv_pwl/Conv", "/blocks/blocks.0/blocks.0.0/conv_dw/Conv",
                     "/blocks/blocks.6/blocks.6.0/conv_pwl/Conv", "/blocks/blocks.6/blocks.6.0/se/Mul",
                     "/blocks/blocks.6/blocks.6.0/se/ReduceMean", "/blocks/blocks.6/blocks.6.0/conv_dw/Conv"]
    names = {node.name for node in static_to_onnx(_tiny("efficientnet_b2", "tf_same"), 1, 64, 11, "logits").graph.node}
    assert set(rdk_node_info) <= names


def test_real_lite0_at_opset_11_gives_torchs_answers_on_photos(tmp_path: Path, lite0_torch,
                                                               photo_thumbnails: dict) -> None:
    path = export("efficientnet_lite0", "default", tmp_path / "lite0_11.onnx", opset=11, batch=1).path
    assert onnx.load(str(path)).opset_import[0].version == 11
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    assert session.get_inputs()[0].shape == [1, 3, 224, 224]
    batch = np.stack([lite0_torch.preprocessing(np.asarray(image)) for image in photo_thumbnails.values()])
    expected = lite0_torch(batch)
    actual = np.concatenate([session.run(None, {"input": row[None]})[0] for row in batch])
    assert actual.argmax(1).tolist() == expected.argmax(1).tolist()
    assert np.abs(actual - expected).max() < 1e-4  # measured 1.05e-05 on 24 photos (benchmarks/npu_export.py)


class _Attention(torch.nn.Module):
    """Self-attention over the pooled features: ``scaled_dot_product_attention`` exports from
    opset 14 only (the exporter's own table)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        query = x[:, None, None, :]
        return torch.nn.functional.scaled_dot_product_attention(query, query, query)[:, 0, 0, :]


def test_an_op_the_exporter_lacks_at_that_opset_is_one_line(capfd: pytest.CaptureFixture[str]) -> None:
    net = _tiny("efficientnet_b0", "tf_same")
    net.classifier = torch.nn.Sequential(_Attention(), net.classifier)
    with pytest.raises(UsageError) as raised:
        static_to_onnx(net, 1, 64, 11, "logits")
    assert str(raised.value) == ("--opset 11 is too low for efficientnet_b0: aten::scaled_dot_product_attention "
                                 "needs opset 14 or newer")
    assert static_to_onnx(net, 1, 64, 14, "logits").opset_import[0].version == 14
    captured = capfd.readouterr()
    assert "Torch IR graph" not in captured.out + captured.err  # the exporter's dump is kept quiet
