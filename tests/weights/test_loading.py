"""create_model with weights: embedded entries, new heads, adapted stems, safe and strict loading."""

from __future__ import annotations

import dataclasses
import json
import pickle
import shutil
import warnings
from pathlib import Path

import pytest
import torch

from effnet.data.transforms import Preprocessing
from effnet.errors import UsageError, WeightsError, WeightsMismatchError, WrongArchitectureError
from effnet.models.spec import Padding
from effnet.weights.entry import WeightsEntry
from effnet.weights import loading
from effnet.weights.io import entry_from_metadata, metadata_from_entry, write_safetensors
from effnet.weights.loading import adapt_input_conv, create_model, resolve_entry
from effnet.weights.registry import DEFAULTS, arch_for, get_weights, list_weights


@pytest.fixture(scope="module")
def lite0() -> torch.nn.Module:
    return create_model("efficientnet_lite0", "default").eval()


def test_embedded_entries_are_installed_and_verified() -> None:
    for arch in ("efficientnet_lite0", "efficientnet_lite1", "efficientnet_lite2"):
        entry = get_weights("default", arch)
        assert entry.available() and entry.sha256 and DEFAULTS[arch] == entry.name
        assert entry.padding == Padding.TF_SAME and entry.bn_eps == 1e-3  # TF-trained
        assert entry.preprocessing.mean == pytest.approx((127 / 255,) * 3)


def test_default_weights_carry_their_settings(lite0: torch.nn.Module) -> None:
    assert lite0.padding == Padding.TF_SAME
    assert {m.eps for m in lite0.modules() if isinstance(m, torch.nn.BatchNorm2d)} == {1e-3}
    assert lite0.pretrained_cfg.name == "efficientnet_lite0.tf_in1k"


def test_new_head_keeps_the_backbone(lite0: torch.nn.Module) -> None:
    model = create_model("lite0", "default", num_classes=10).eval()
    assert model.classifier.out_features == 10
    for key, value in model.state_dict().items():
        if not key.startswith("classifier."):
            torch.testing.assert_close(value, lite0.state_dict()[key])
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(model.forward_features(x), lite0.forward_features(x))


def test_one_channel_stem_sums_rgb_filters(lite0: torch.nn.Module) -> None:
    grey = create_model("lite0", "default", in_chans=1).eval()
    x = torch.rand(1, 1, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(grey(x), lite0(x.expand(-1, 3, -1, -1)), atol=1e-4, rtol=1e-4)


def test_many_channel_stem_keeps_magnitude() -> None:
    weight = torch.randn(8, 3, 3, 3)
    adapted = adapt_input_conv(weight, 6)
    x = torch.rand(1, 3, 5, 5)
    out_rgb = torch.nn.functional.conv2d(x, weight)
    out_six = torch.nn.functional.conv2d(x.repeat(1, 2, 1, 1), adapted)
    torch.testing.assert_close(out_rgb, out_six)


def test_weights_for_another_architecture_are_one_usage_error(lite0_safetensors: Path) -> None:
    """Issue 14: the same mistake, one exit code (2), whether the weights come as an entry, a
    file that names its model, or tensors that are exactly another variant's."""
    entry = get_weights("efficientnet_lite1.tf_in1k")
    for weights, message in (
        (entry.name, "weights 'efficientnet_lite1.tf_in1k' are for efficientnet_lite1, not efficientnet_lite0"),
        (str(entry.locate()), f"{entry.locate()}: weights are for efficientnet_lite1, not efficientnet_lite0"),
    ):
        with pytest.raises(WrongArchitectureError) as error:
            create_model("efficientnet_lite0", weights)
        assert str(error.value) == message and error.value.exit_code == 2
    with pytest.raises(WrongArchitectureError, match="weights are for efficientnet_lite0, not efficientnet_lite1") as error:
        create_model("efficientnet_lite1", str(lite0_safetensors))
    assert error.value.exit_code == 2


def test_tensors_that_fit_no_variant_name_the_differences(tmp_path: Path, lite0: torch.nn.Module) -> None:
    state = {k: v for k, v in lite0.state_dict().items() if k != "blocks.1.0.bn2.bias"}
    state["blocks.1.0.conv_dw.weight"] = torch.zeros(96, 1, 5, 5)
    path = tmp_path / "broken.pth"
    torch.save(state, path)
    with pytest.raises(WeightsMismatchError, match=r"weights do not fit efficientnet_lite0: 1 missing: "
                       r"blocks\.1\.0\.bn2\.bias \| 1 shape mismatch: blocks\.1\.0\.conv_dw\.weight: file \(96, 1, 5, 5\) "
                       r"vs model \(96, 1, 3, 3\)") as error:
        create_model("efficientnet_lite0", str(path))
    assert error.value.exit_code == 1


def test_a_full_entry_name_needs_no_model() -> None:
    """``--weights efficientnet_lite1.tf_in1k`` alone: the entry names its architecture, so
    the default model (Lite0) must not be applied first (issue 14)."""
    assert arch_for("efficientnet_lite1.tf_in1k") == "efficientnet_lite1"
    assert arch_for(get_weights("efficientnet_b3.tv_in1k")) == "efficientnet_b3"
    assert arch_for("tf_in1k") is None and arch_for("default") is None and arch_for("lite1.safetensors") is None
    assert resolve_entry("efficientnet_lite1.tf_in1k", None).arch == "efficientnet_lite1"
    model = create_model(weights="efficientnet_lite1.tf_in1k")
    assert model.plan.name == "efficientnet_lite1" and model.pretrained_cfg.name == "efficientnet_lite1.tf_in1k"
    assert create_model(weights="tf_in1k").pretrained_cfg.name == "efficientnet_lite0.tf_in1k"  # a tag: the default model's
    with pytest.raises(UsageError, match="weights 'efficientnet_lite1.tf_in1k' are for efficientnet_lite1, not efficientnet_lite0"):
        create_model("lite0", get_weights("efficientnet_lite1.tf_in1k"))


def test_corrupt_truncated_and_pickled_files_are_errors(tmp_path: Path) -> None:
    source = get_weights("efficientnet_lite0.tf_in1k").locate()
    truncated = tmp_path / "cut.pth"
    truncated.write_bytes(source.read_bytes()[:100_000])
    with pytest.raises(WeightsError, match="corrupt or truncated"):
        create_model("lite0", str(truncated))

    class Payload:
        def __reduce__(self):  # would run code if unpickled
            return (print, ("pwned",))

    evil = tmp_path / "evil.pth"
    with open(evil, "wb") as handle:
        pickle.dump({"conv_stem.weight": Payload()}, handle)  # protocol 4: torch's loader cannot even step through
    zipped = tmp_path / "zipped.pth"
    torch.save({"conv_stem.weight": shutil.rmtree}, zipped)  # torch's zip format: its loader names the global
    for path, refused in ((evil, "builtins.print"), (zipped, "shutil.rmtree")):
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # torch's own UserWarning must not precede the one line
            with pytest.raises(WeightsError) as error:
                create_model("lite0", str(path))
        assert str(error.value) == (f"{path}: refusing to load: the file holds Python objects beyond tensors "
                                    f"({refused}); save its state_dict() instead")
    photo = tmp_path / "photo.pth"
    photo.write_bytes((Path(__file__).resolve().parents[2] / "examples" / "images" / "cat.jpg").read_bytes())
    with pytest.raises(WeightsError, match="not a PyTorch checkpoint, safetensors or Keras file"):
        create_model("lite0", str(photo))
    empty = tmp_path / "empty.pth"
    empty.write_bytes(b"")
    with pytest.raises(WeightsError, match="empty"):
        create_model("lite0", str(empty))


def test_checksum_mismatch_is_reported(tmp_path: Path) -> None:
    entry = get_weights("efficientnet_lite0.tf_in1k")
    copy = tmp_path / "copy.pth"
    data = bytearray(entry.locate().read_bytes())
    data[-100] ^= 0xFF
    copy.write_bytes(bytes(data))
    with pytest.raises(WeightsError, match="sha256"):
        create_model("lite0", dataclasses.replace(entry, file=str(copy)))


def test_unknown_entry_lists_known_ones() -> None:
    with pytest.raises(WeightsError, match="efficientnet_lite0.tf_in1k"):
        get_weights("imagenet21k", "efficientnet_lite0")
    assert {e.arch for e in list_weights()} >= {"efficientnet_lite0", "efficientnet_lite1", "efficientnet_lite2"}


def test_an_onnx_file_says_it_cannot_be_loaded_into_torch(tmp_path: Path, monkeypatch) -> None:  # noqa: ANN001
    onnx_file = tmp_path / "lite0.onnx"
    onnx_file.write_bytes(b"not parsed: the suffix alone decides")
    with pytest.raises(UsageError, match="lite0.onnx: an ONNX model, not PyTorch weights; pass the .safetensors"):
        create_model("lite0", str(onnx_file))
    monkeypatch.chdir(tmp_path)  # a bare file name too, not only a path, is read as a file, not a registry tag
    with pytest.raises(UsageError, match="an ONNX model, not PyTorch weights"):
        create_model("lite0", "lite0.onnx")


def test_the_safetensors_header_round_trips_an_entry(tmp_path: Path) -> None:
    """One writer (convert and train both use it) and one reader agree on every field."""
    entry = WeightsEntry(
        name="efficientnet_b0.run1", arch="efficientnet_b0", source="effnet",
        preprocessing=Preprocessing(size=96, crop_fraction=1.0, mean=(0.5,) * 3, std=(0.2,) * 3),
        padding=Padding.TF_SAME, bn_eps=1e-3, labels=("zero", "one"), num_classes=2, top1=99.5, top5=None,
        reported_by="effnet train (run1)", extra={"shape": {"width_mult": 0.5}},
    )
    header = metadata_from_entry(entry, in_chans=1)
    assert header["in_chans"] == 1
    stored = {k: v if isinstance(v, str) else json.dumps(v) for k, v in header.items()}  # as write_safetensors does
    back = entry_from_metadata(stored, tmp_path / "w.safetensors")
    assert back == dataclasses.replace(entry, file=str(tmp_path / "w.safetensors"))
    assert back.extra == entry.extra


def test_the_same_weights_written_twice_are_the_same_bytes(tmp_path: Path, lite0: torch.nn.Module) -> None:
    """safetensors writes its metadata map in a random order: two conversions of one checkpoint
    had different sha256 sums. write_safetensors sorts the keys (and the file still loads)."""
    from safetensors import safe_open

    metadata = metadata_from_entry(lite0.pretrained_cfg)
    state = {name: tensor for name, tensor in list(lite0.state_dict().items())[:6]}
    files = [tmp_path / f"{index}.safetensors" for index in range(4)]
    for path in files:
        write_safetensors(state, path, metadata)
    assert len({path.read_bytes() for path in files}) == 1
    raw = files[0].read_bytes()
    written = list(json.loads(raw[8:8 + int.from_bytes(raw[:8], "little")])["__metadata__"])
    assert written == sorted(written) and len(written) > 5
    with safe_open(files[0], "pt") as handle:
        assert set(handle.metadata()) == set(metadata)
        assert torch.equal(handle.get_tensor(next(iter(state))), next(iter(state.values())))


# -- crafted or corrupt safetensors headers ---------------------------------------------------
@pytest.fixture(scope="module")
def lite0_safetensors(tmp_path_factory: pytest.TempPathFactory, lite0: torch.nn.Module) -> Path:
    """The embedded Lite0 as our own safetensors (what ``effnet convert`` writes)."""
    path = tmp_path_factory.mktemp("weights") / "lite0.safetensors"
    write_safetensors(lite0.state_dict(), path, metadata_from_entry(lite0.pretrained_cfg))
    return path


def with_header(source: Path, destination: Path, **changes: str) -> Path:
    """``source``'s tensors under a header with ``changes`` (raw strings, as a file holds them)."""
    from safetensors import safe_open

    with safe_open(str(source), framework="pt") as handle:
        state = {key: handle.get_tensor(key) for key in handle.keys()}
        header = dict(handle.metadata()) | changes
    write_safetensors(state, destination, header)
    return destination


@pytest.mark.parametrize(
    "key,value,message",
    [
        ("shape", '{"width_mult": 200}', r"bad 'shape.width_mult' in the safetensors header: 200 is not a number in \(0, 16\]"),
        ("shape", '{"depth_mult": 1, "dropout": 0.5}', r"bad 'shape' .*: expected an object with width_mult and/or depth_mult"),
        ("num_classes", "1000000000", r"bad 'num_classes' .*: 1000000000 is not a whole number in \[1, 100000\]"),
        ("num_classes", "10", "the header says 10 classes but the classifier has 1000"),
        ("preprocessing", '{"size": 0}', r"bad 'preprocessing.size' .*: 0 is not a whole number in \[8, 4096\]"),
        ("preprocessing", '{"size": 60000}', r"bad 'preprocessing.size' .*: 60000 is not"),
        ("preprocessing", '{"size": 224, "crop_fraction": 0.9', r"bad 'preprocessing' .*: not valid JSON"),
        ("preprocessing", '{"size": 224, "mean": [0.5, 0.5]}', r"bad 'preprocessing.mean' .*: expected 3 numbers"),
        ("preprocessing", '{"std": [0.5, 0, 0.5]}', r"bad 'preprocessing.std' .*: 0 is not a number in \(0, 10\)"),
        ("preprocessing", '{"crop_mode": "zoom"}', r"bad 'preprocessing.crop_mode' .*: 'zoom' is not one of"),
        ("padding", "reflect", r"bad 'padding' .*: 'reflect' is not one of symmetric, tf_same"),
        ("bn_eps", "NaN", r"bad 'bn_eps' .*: NaN is not a number in \(0, 1\)"),
        ("labels", '["cat", "dog"]', r"bad 'labels' .*: 2 names for 1000 classes"),
        ("arch", "efficientnet_b99", r"bad 'arch' .*: no model is called 'efficientnet_b99'"),
    ],
)
def test_crafted_headers_are_one_line_errors(lite0_safetensors: Path, tmp_path: Path, key: str, value: str,
                                             message: str) -> None:
    """Issue 14: a header is checked before it sizes anything (width_mult=200 grew to 5.1 GB,
    num_classes=1e9 and sizes 0/60000 ended in tracebacks, broken preprocessing JSON was
    silently ignored and changed the predictions)."""
    path = with_header(lite0_safetensors, tmp_path / "crafted.safetensors", **{key: value})
    with pytest.raises(WeightsError, match=message) as error:
        create_model(weights=str(path))
    assert "\n" not in str(error.value) and str(path) in str(error.value)


def test_a_header_that_does_not_fit_its_tensors_is_refused_before_building(
        lite0_safetensors: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A plausible width (2x) that the tensors do not have: refused from the plan's shapes,
    with no module built (a crafted width must not cost its memory first)."""
    path = with_header(lite0_safetensors, tmp_path / "wide.safetensors", shape='{"width_mult": 2}')

    def no_build(*args: object, **kwargs: object) -> None:
        raise AssertionError("a module was built before the tensors were checked")

    monkeypatch.setattr(loading, "build_model", no_build)
    with pytest.raises(WeightsMismatchError, match=r"weights do not fit efficientnet_lite0: .*shape mismatch"):
        create_model(weights=str(path))


def test_an_intact_header_loads(lite0_safetensors: Path, lite0: torch.nn.Module) -> None:
    model = create_model(weights=str(lite0_safetensors)).eval()
    assert model.pretrained_cfg.preprocessing == lite0.pretrained_cfg.preprocessing
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        assert torch.equal(model(x), lite0(x))
