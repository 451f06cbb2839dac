"""MindSpore: mindcv ``.ckpt`` files read without MindSpore (protobuf decoded by hand, CRC
checked), converted strictly with the training state set apart, and giving mindcv's own
logits at the nominal and at an odd input size.

The reference is mindcv itself: ``fixtures/mindcv_b0_w02_d05.ckpt`` is its EfficientNet-B0
(width 0.2, depth 0.5, 10 classes, random weights and BatchNorm statistics) saved from a
training network (Momentum slots, counters, a string value, the CRC trailer), with the logits
MindSpore computed (``scripts/make_framework_fixtures.py``).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from effnet.errors import WeightsError, WeightsMismatchError, WrongArchitectureError
from effnet.models.spec import Padding
from effnet.models.variants import resolve
from effnet.weights.io import read_checkpoint
from effnet.weights.loading import create_model
from effnet.weights.mindspore_ckpt import read_mindspore_ckpt
from effnet.weights.sources import detect_source, mindspore

FRAMEWORK = "mindspore"  # framework_case: the mindcv_* fixtures (conftest.py)
FIXTURES = Path(__file__).parent / "fixtures"
B0 = FIXTURES / "mindcv_b0_w02_d05.ckpt"
B0_SHAPE = {"width_mult": 0.2, "depth_mult": 0.5}
CRC_TRAILER = 17  # b"crc_num" + 10 bytes


def test_logits_match_mindcv(framework_case) -> None:  # noqa: ANN001
    """Read, detected, converted and loaded with the bare file's settings (TF "same" for the
    actual size, eps 1e-5 below B5), at 224x224 and at 225x227."""
    model = create_model(framework_case.settings["arch"], str(framework_case.checkpoint), **framework_case.shape).eval()
    assert (model.padding, model.bn_eps) == (Padding.TF_SAME, 1e-5)
    with torch.no_grad():
        for which in ("nominal", "odd"):
            logits = model(framework_case.inputs(which)).numpy()
            assert np.abs(logits - framework_case.logits[which]).max() < framework_case.tolerance(which), which


def test_training_state_is_set_apart_and_strings_are_metadata() -> None:
    state, metadata = read_checkpoint(B0)
    assert metadata == {"producer": "mindcv 0.3.0"}
    assert detect_source(state) == "mindspore" and mindspore.SOURCE.classifier_rows(state) == 10
    model, training = mindspore.split_training_state(state)
    assert {"learning_rate", "global_step", "momentum", "epoch_num"} <= set(training)
    assert "moments.features.0.weight" in training and not any(key.startswith("moments.") for key in model)
    plan = resolve("efficientnet_b0", num_classes=10, **B0_SHAPE)
    converted = mindspore.from_mindspore(state, plan)
    expected = {k: v for k, v in plan.tensor_shapes().items() if not k.endswith("num_batches_tracked")}
    assert {k: tuple(v.shape) for k, v in converted.items()} == expected
    assert torch.equal(converted["blocks.1.0.conv_dw.weight"], state["features.4.0.block.3.weight"])
    assert torch.equal(converted["bn2.running_var"], state["features.11.moving_variance"])


def test_b5_and_up_take_eps_1e3() -> None:
    """mindcv builds B5-B7 (width >= 1.6) with eps 1e-3, as torchvision does."""
    eps = {arch: mindspore.SOURCE.bare_settings(resolve(arch)).bn_eps for arch in ("efficientnet_b4", "efficientnet_b5")}
    assert eps == {"efficientnet_b4": 1e-5, "efficientnet_b5": 1e-3}


# -- a protobuf writer, for checkpoints the tests need to craft ---------------------------------
def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        out.append((value & 0x7F) | (0x80 if value > 0x7F else 0))
        value >>= 7
        if not value:
            return bytes(out)


def _field(number: int, payload: bytes) -> bytes:
    return _varint(number << 3 | 2) + _varint(len(payload)) + payload


def _value(tag: str, array: np.ndarray, dtype: str = "Float32", packed: bool = False) -> bytes:
    """One ``Checkpoint`` message holding one tensor, as ``save_checkpoint`` writes each."""
    dims = list(array.shape) or [0]
    encoded = _field(1, b"".join(map(_varint, dims))) if packed else b"".join(_varint(1 << 3) + _varint(d) for d in dims)
    tensor = encoded + _field(2, dtype.encode()) + _field(3, array.tobytes())
    return _field(1, _field(1, tag.encode()) + _field(2, tensor))


def _mindcv_ckpt(arch: str, path: Path, num_classes: int = 10) -> None:
    """A .ckpt in mindcv's names with zero tensors of ``arch``'s shapes."""
    plan = resolve(arch, num_classes=num_classes)
    modules = {ours: theirs for theirs, ours in mindspore.key_map(plan).items()}
    norm = {"weight": "gamma", "bias": "beta", "running_mean": "moving_mean", "running_var": "moving_variance"}
    values = []
    for key, shape in plan.tensor_shapes().items():
        module, _, leaf = key.rpartition(".")
        if leaf == "num_batches_tracked":
            continue
        theirs = norm[leaf] if len(shape) == 1 and f"{module}.running_mean" in plan.tensor_shapes() else leaf
        values.append(_value(f"{modules[module]}.{theirs}", np.zeros(shape, np.float32), packed=len(values) % 2 == 0))
    path.write_bytes(b"".join(values))


def test_a_checkpoint_of_another_variant_is_named(tmp_path: Path) -> None:
    """mindcv's B1 file read as B0 (the same layers, more blocks): the error names B1."""
    path = tmp_path / "efficientnet_b1.ckpt"
    _mindcv_ckpt("efficientnet_b1", path)
    with pytest.raises(WrongArchitectureError, match="weights are for efficientnet_b1, not efficientnet_b0"):
        create_model("efficientnet_b0", str(path))
    model = create_model("efficientnet_b1", str(path))
    assert (model.padding, model.bn_eps, model.num_classes) == (Padding.TF_SAME, 1e-5, 10)


def test_blocks_without_se_are_refused() -> None:
    state, _ = read_mindspore_ckpt(B0)
    with pytest.raises(WeightsError, match="mindcv's EfficientNet-B has MBConv blocks with SE; efficientnet_lite0"):
        mindspore.from_mindspore(state, resolve("efficientnet_lite0"))


# -- reading: every way a file can be wrong -------------------------------------------------------
@pytest.mark.parametrize("cut", [3, 1000, 300_000])
def test_truncated(tmp_path: Path, cut: int) -> None:
    path = tmp_path / "cut.ckpt"
    path.write_bytes(B0.read_bytes()[:cut])
    with pytest.raises(WeightsError, match="truncated MindSpore checkpoint") as error:
        read_checkpoint(path)
    assert "\n" not in str(error.value)


def test_crc_corrupt(tmp_path: Path) -> None:
    data = bytearray(B0.read_bytes())
    assert data[-CRC_TRAILER:-10] == b"crc_num"
    data[5000] ^= 0x01
    path = tmp_path / "flipped.ckpt"
    path.write_bytes(bytes(data))
    with pytest.raises(WeightsError, match="CRC check failed: the MindSpore checkpoint is corrupt"):
        read_checkpoint(path)


def test_a_cut_between_tensors_is_caught_by_the_strict_load(tmp_path: Path) -> None:
    """Without its CRC trailer, a file cut exactly between two values still parses (protobuf
    cannot tell): the strict load then names what is missing."""
    data = memoryview(B0.read_bytes()[:-CRC_TRAILER])
    end = 0
    for _ in range(10):  # each value: field key 0x0a, length, message
        size, start = _read_varint(data, end + 1)
        end = start + size
    path = tmp_path / "short.ckpt"
    path.write_bytes(bytes(data[:end]))
    assert len(read_checkpoint(path)[0]) == 10
    with pytest.raises(WeightsMismatchError, match="missing"):
        create_model("efficientnet_b0", str(path), **B0_SHAPE)


def _read_varint(data: memoryview, pos: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        byte = data[pos]
        value, pos, shift = value | (byte & 0x7F) << shift, pos + 1, shift + 7
        if byte < 0x80:
            return value, pos


def test_not_a_checkpoint(tmp_path: Path) -> None:
    text = tmp_path / "notes.ckpt"
    text.write_bytes(b"\nhello, a text file that starts with a newline\n")  # 0x0a, then length 'h' = 104
    with pytest.raises(WeightsError, match=r"truncated MindSpore checkpoint \(a field at byte 0 needs 104 bytes"):
        read_checkpoint(text)
    text.write_bytes(b"\n\x02xy")  # a value holding field 15, which no checkpoint has
    with pytest.raises(WeightsError, match=r"not a MindSpore checkpoint, or a corrupt one \(unexpected field 15"):
        read_checkpoint(text)
    other = tmp_path / "other.ckpt"
    other.write_bytes(b"GGUF....")
    with pytest.raises(WeightsError, match="neither a PyTorch checkpoint .* nor a MindSpore one"):
        read_checkpoint(other)


def test_a_pytorch_ckpt_is_still_read_by_torch(tmp_path: Path) -> None:
    """``.ckpt`` is PyTorch Lightning's suffix too: a zip or pickle goes to torch.load (weights only)."""
    path = tmp_path / "lightning.ckpt"
    torch.save({"state_dict": {"conv_stem.weight": torch.ones(2, 3, 3, 3)}}, path)
    state, _ = read_checkpoint(path)
    assert list(state) == ["conv_stem.weight"] and detect_source(state) == "timm"


@pytest.mark.parametrize("payload,error", [
    (_field(1, _field(1, b"table") + _field(3, b"")), "'table' is a map tensor"),
    (_value("w", np.zeros(2, np.float32), dtype="Complex64"), "unsupported type Complex64"),
    (_value("w", np.zeros(2, np.float32)) + _value("v", np.zeros(1)) + _value("w", np.zeros(2, np.float32)),
     "'w' appears twice"),
    (_value("w", np.zeros((2, 3), np.float32))[:-4], "truncated"),
])
def test_crafted_values_are_refused(tmp_path: Path, payload: bytes, error: str) -> None:
    path = tmp_path / "crafted.ckpt"
    path.write_bytes(payload)
    with pytest.raises(WeightsError, match=error):
        read_mindspore_ckpt(path)


def test_split_tensors_are_joined_and_scalars_kept(tmp_path: Path) -> None:
    """save_checkpoint splits a tensor over 512 MiB into consecutive values of one tag."""
    whole = np.arange(6, dtype=np.float32).reshape(2, 3)
    first = _value("w", whole)
    path = tmp_path / "split.ckpt"
    half = _field(1, _field(1, b"w") + _field(2, b"".join(_varint(1 << 3) + _varint(d) for d in (2, 3))
                                              + _field(2, b"Float32") + _field(3, whole.tobytes()[:12])))
    rest = _field(1, _field(1, b"w") + _field(2, b"".join(_varint(1 << 3) + _varint(d) for d in (2, 3))
                                              + _field(2, b"Float32") + _field(3, whole.tobytes()[12:])))
    path.write_bytes(half + rest + _value("step", np.array(7, np.int32), dtype="Int32"))
    state, _ = read_mindspore_ckpt(path)
    assert torch.equal(state["w"], torch.from_numpy(whole)) and state["step"].shape == () and int(state["step"]) == 7
    path.write_bytes(first)
    assert torch.equal(read_mindspore_ckpt(path)[0]["w"], torch.from_numpy(whole))
