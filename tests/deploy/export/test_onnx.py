"""ONNX export: the file matches torch at every shape it accepts, carries its own metadata,
keeps SiLU fusable, and refuses to write a graph that fails its checks.

The reference for logits is effnet's own torch model with the same weights (itself proven
equal to the reference implementations in tests/weights/test_parity.py).
"""

from __future__ import annotations

import collections
import json
from pathlib import Path

import numpy as np
import onnx
import onnxruntime
import pytest
import torch

from effnet.data.images import load_image
from effnet.deploy.export import onnx as onnx_export
from effnet.deploy.export.onnx import ExportError, export, export_friendly, export_network
from effnet.errors import UsageError
from effnet.models.network import build_model
from effnet.runtime.onnx_metadata import INPUT_FLOAT, read_metadata
from effnet.runtime.predictor import Predictor
from effnet.weights.registry import get_weights


@pytest.mark.parametrize("shape", [(3, 224, 224), (1, 225, 261), (2, 97, 140)])
def test_dynamic_axes_follow_tf_same_padding(lite0_dynamic: Path, lite0_torch, shape) -> None:
    # TF "same" pads depend on the input size (225 and 261 pad differently from 224): a graph
    # with constant pads would be wrong here while right at 224
    n, h, w = shape
    x = torch.randn(n, 3, h, w, generator=torch.Generator().manual_seed(h))
    with torch.inference_mode():
        expected = lite0_torch.model(x).numpy()
    session = onnxruntime.InferenceSession(str(lite0_dynamic), providers=["CPUExecutionProvider"])
    (actual,) = session.run(None, {"input": x.numpy()})
    assert np.abs(actual - expected).max() < 1e-4


def test_file_carries_what_predict_needs(lite0_dynamic: Path, lite0_torch, example_photos: list[Path]) -> None:
    metadata = read_metadata(lite0_dynamic)
    entry = get_weights("efficientnet_lite0.tf_in1k")
    assert (metadata["arch"], metadata["weights"], metadata["input"]) == (
        "efficientnet_lite0", entry.name, INPUT_FLOAT)
    assert (metadata["padding"], metadata["bn_eps"], metadata["num_classes"]) == ("tf_same", 1e-3, 1000)
    assert metadata["weights_sha256"] == entry.sha256
    assert metadata["preprocessing"] == json.loads(json.dumps(entry.preprocessing.to_dict()))

    # a Predictor on the file alone (onnxruntime) needs nothing else and agrees with torch
    predictor = Predictor(weights=str(lite0_dynamic))
    assert predictor.engine.name == "onnxruntime" and predictor.arch == "efficientnet_lite0"
    results = predictor([str(path) for path in example_photos])
    images = [load_image(path) for path in example_photos]
    expected = lite0_torch(np.stack([lite0_torch.preprocessing(image) for image in images]))
    assert [r[0].index for r in results] == expected.argmax(1).tolist()


def test_silu_exports_as_plain_ops_that_onnxruntime_fuses(tmp_path: Path) -> None:
    # B0 has SiLU everywhere and squeeze-excitation; opset 18 keeps every fusion available
    path = export("efficientnet_b0", None, tmp_path / "b0.onnx", batch=1, size=64).path
    model = onnx.load(str(path))
    assert {opset.domain for opset in model.opset_import} <= {"", "ai.onnx"}
    kinds = collections.Counter(node.op_type for node in model.graph.node)
    assert kinds["Sigmoid"] > 0 and kinds["Mul"] >= kinds["Sigmoid"]
    options = onnxruntime.SessionOptions()
    options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
    options.optimized_model_filepath = str(tmp_path / "optimized.onnx")
    onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    fused = collections.Counter(node.op_type for node in onnx.load(str(tmp_path / "optimized.onnx")).graph.node)
    # every SiLU of B0 became one op: stem, head, 2 in the first block and 3 in each of the other 15
    assert fused["QuickGelu"] == 1 + 1 + 2 + 3 * 15 == kinds["Sigmoid"] - 16
    # and the 16 squeeze-excitation gates (Conv -> Sigmoid) folded into their convolutions
    assert fused["FusedConv"] == 16 and fused["Sigmoid"] == 0


def test_export_network_takes_a_built_module_and_leaves_it_alone(tmp_path: Path) -> None:
    """What ``effnet bench`` exports: a module it built (random weights, a scaled plan, ReLU6),
    with the full metadata, and the module it keeps timing is not changed by the export."""
    torch.manual_seed(0)
    net = build_model("efficientnet_lite0", width_mult=0.5, num_classes=7).eval()
    before = {name: value.clone() for name, value in net.state_dict().items()}
    relus = sum(isinstance(module, torch.nn.ReLU6) for module in net.modules())
    result = export_network(net, tmp_path / "scaled.onnx", size=64)
    assert result.replaced is False
    assert relus > 0 and sum(isinstance(module, torch.nn.ReLU6) for module in net.modules()) == relus
    assert all(torch.equal(before[name], value) for name, value in net.state_dict().items())
    metadata = read_metadata(result.path)
    assert metadata == json.loads(json.dumps(result.metadata))
    assert (metadata["arch"], metadata["weights"], metadata["num_classes"], metadata["input"]) == (
        "efficientnet_lite0", "random", 7, INPUT_FLOAT)
    assert metadata["preprocessing"]["size"] == 64 and metadata["labels"] == [f"class_{i}" for i in range(7)]
    assert (metadata["padding"], metadata["bn_eps"]) == (net.padding.value, net.bn_eps)
    x = torch.randn(3, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    with torch.inference_mode():
        expected = net(x).numpy()
    session = onnxruntime.InferenceSession(str(result.path), providers=["CPUExecutionProvider"])
    assert session.get_inputs()[0].shape[2:] == [64, 64]  # fixed size, dynamic batch
    assert np.abs(session.run(None, {"input": x.numpy()})[0] - expected).max() < 1e-4


def test_static_same_padding_exports_with_dynamic_sizes(tmp_path: Path) -> None:
    """PaddleClas's frozen "SAME" (``tf_same_static``): the top/left pads are constants and the
    bottom/right ones follow the input, so the dynamic-size graph matches torch at odd sizes
    too (``export_network`` checks 225x261 itself), where dynamic TF "same" gives other logits."""
    torch.manual_seed(0)
    shape = {"width_mult": 0.25, "depth_mult": 0.25, "num_classes": 5}
    net = build_model("efficientnet_b0", padding="tf_same_static", **shape).eval()
    result = export_network(net, tmp_path / "static.onnx")
    assert read_metadata(result.path)["padding"] == "tf_same_static"
    assert [check["shape"][2:] for check in result.checks] == [[224, 224], [225, 261]]
    dynamic = build_model("efficientnet_b0", padding="tf_same", **shape).eval()
    dynamic.load_state_dict(net.state_dict())
    session = onnxruntime.InferenceSession(str(result.path), providers=["CPUExecutionProvider"])
    x = torch.randn(1, 3, 97, 130, generator=torch.Generator().manual_seed(2))
    with torch.inference_mode():
        expected, other = net(x).numpy(), dynamic(x).numpy()
    actual = session.run(None, {"input": x.numpy()})[0]
    assert np.abs(actual - expected).max() < 1e-4 < np.abs(actual - other).max()


def test_export_friendly_swaps_relu6_for_the_same_values() -> None:
    torch.manual_seed(0)
    net = build_model("efficientnet_lite0", width_mult=0.25, num_classes=5).eval()
    x = 4 * torch.randn(2, 3, 48, 48)
    with torch.inference_mode():
        expected = net(x)
        swapped = export_friendly(net)
        assert not any(isinstance(module, torch.nn.ReLU6) for module in swapped.modules())
        assert torch.equal(swapped(x), expected)


def test_a_failed_check_writes_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(onnx_export, "TOLERANCE", -1.0)  # no graph can pass
    monkeypatch.setattr(onnx_export, "FLOAT32_SLACK", -1.0)
    with pytest.raises(ExportError, match="nothing written"):
        export("efficientnet_lite0", None, tmp_path / "out.onnx", batch=1, size=32)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("settings, message", [
    ({"opset": 10}, "--opset must be between 11 and 23, not 10"),
    ({"opset": 17, "with_preprocessing": True}, "--with-preprocessing needs --opset 18 or newer"),
    ({"nv12": (224, 225)}, "NV12 needs even frame sides, not 224x225"),
    ({"nv12": (224, 224), "with_preprocessing": True}, "exclude each other"),
    ({"bgr": True}, "--bgr only applies with --with-preprocessing"),
    ({"size": "native", "with_preprocessing": True}, "exclude each other"),
])
def test_settings_that_exclude_each_other_fail_before_any_work(tmp_path: Path, settings: dict,
                                                               message: str) -> None:
    with pytest.raises(UsageError, match=message):
        export("efficientnet_b9_does_not_exist", None, tmp_path / "m.onnx", **settings)  # the model is never read
    assert list(tmp_path.iterdir()) == []


def _outputs_that_cannot_be_written(tmp_path: Path, unwritable_folder: Path) -> list[tuple[Path, str]]:
    (tmp_path / "notes.txt").write_text("a file")
    (tmp_path / "folder.onnx").mkdir()
    return [(tmp_path / "notes.txt" / "m.onnx", "is a file, not a folder"),
            (tmp_path / "folder.onnx", "it is a folder, not a file"),
            (unwritable_folder / "m.onnx", f"cannot create files in {unwritable_folder}")]


def test_an_output_that_cannot_be_written_fails_before_the_export(tmp_path: Path, unwritable_folder: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """The error names the output, never a temporary file, and comes before the slow part."""
    def export_started(*args, **kwargs):
        raise AssertionError("the export ran before the output was checked")

    monkeypatch.setattr(onnx_export, "torch_to_onnx", export_started)
    net = build_model("efficientnet_lite0", width_mult=0.25, num_classes=5)
    for output, reason in _outputs_that_cannot_be_written(tmp_path, unwritable_folder):
        for run in (lambda: export("efficientnet_lite0", None, output), lambda: export_network(net, output)):
            with pytest.raises(UsageError, match=f"cannot write {output}: .*{reason}") as error:
                run()
            assert ".tmp" not in str(error.value)


def test_an_existing_file_is_replaced_and_the_result_says_so(tmp_path: Path) -> None:
    output = tmp_path / "m.onnx"
    output.write_text("an old file")
    torch.manual_seed(0)
    result = export_network(build_model("efficientnet_lite0", width_mult=0.25, num_classes=5), output, batch=1,
                            size=32)
    assert result.replaced is True and read_metadata(output)["num_classes"] == 5
