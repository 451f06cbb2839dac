"""``effnet convert``: safetensors that carry their metadata and reproduce the source's logits."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors import safe_open

from effnet.cli import main
from effnet.models.network import build_model
from effnet.models.spec import Padding
from effnet.models.variants import resolve
from effnet.runtime.predictor import Predictor
from effnet.weights.loading import create_model
from effnet.weights.registry import get_weights
from effnet.weights.sources import torchvision

ROOT = Path(__file__).resolve().parents[2]
CAT = str(ROOT / "examples/images/cat.jpg")


def header(path: Path) -> dict[str, object]:
    """The safetensors metadata, JSON values decoded (plain strings stay strings)."""

    def decode(value: str) -> object:
        try:
            return json.loads(value)
        except json.JSONDecodeError:
            return value

    with safe_open(str(path), framework="pt") as handle:
        return {k: decode(v) for k, v in handle.metadata().items()}


def test_real_lite0_round_trip_gives_identical_logits(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    source = get_weights("efficientnet_lite0.tf_in1k").locate()
    out = tmp_path / "lite0.safetensors"
    assert main(["convert", str(source), "--from", "lukemelas", "--model", "lite0", "-o", str(out)]) == 0
    assert "efficientnet_lite0" in capsys.readouterr().out
    meta = header(out)
    assert meta["arch"] == "efficientnet_lite0" and meta["padding"] == "tf_same" and meta["bn_eps"] == 1e-3
    assert meta["name"] == "efficientnet_lite0.tf_in1k"  # recognised by its checksum
    assert meta["top1"] == 75.1 and meta["labels"] == "imagenet1k" and meta["num_classes"] == 1000

    embedded, converted = Predictor("efficientnet_lite0"), Predictor(weights=str(out))
    assert converted.arch == "efficientnet_lite0"
    assert converted.engine.preprocessing == embedded.engine.preprocessing
    assert converted.engine.labels == embedded.engine.labels
    np.testing.assert_array_equal(converted.logits([CAT]), embedded.logits([CAT]))
    assert converted(CAT) == embedded(CAT)


def images(batch: int, height: int, width: int) -> torch.Tensor:
    return torch.randn(batch, 3, height, width, generator=torch.Generator().manual_seed(1))


def test_timm_checkpoint_takes_the_registry_settings(tmp_path: Path) -> None:
    """A timm-layout file of tf_efficientnet_lite3 (random weights from geffnet): the entry
    timm publishes for it supplies TF padding, eps 1e-3 and its preprocessing, and the
    converted file gives the reference's logits bit for bit."""
    import geffnet

    torch.manual_seed(0)
    reference = geffnet.create_model("tf_efficientnet_lite3").eval()
    batch = images(2, 41, 37)
    src = tmp_path / "tf_efficientnet_lite3.pth"
    torch.save(reference.state_dict(), src)
    out = tmp_path / "lite3.safetensors"
    assert main(["convert", str(src), "--model", "efficientnet_lite3", "-o", str(out)]) == 0
    meta = header(out)
    entry = get_weights("efficientnet_lite3.tf_in1k")
    assert meta["preprocessing"] == entry.preprocessing.to_dict() | {"mean": [0.5] * 3, "std": [0.5] * 3}
    assert (meta["padding"], meta["bn_eps"], meta["source"]) == ("tf_same", 1e-3, "timm")

    model = create_model("efficientnet_lite3", str(out)).eval()
    with torch.no_grad():
        expected = reference(batch)
        assert expected.isfinite().all() and expected.std() > 0
        assert torch.equal(model(batch), expected)


def test_torchvision_checkpoint(tmp_path: Path) -> None:
    """torchvision names (features.N.M.block.K...) -> ours; B0 takes torchvision's eps 1e-5."""
    torch.manual_seed(0)
    source = build_model("efficientnet_b0", padding=Padding.SYMMETRIC, bn_eps=1e-5).eval()
    batch = images(2, 48, 40)
    inverse = {v: k for k, v in torchvision.key_map(resolve("efficientnet_b0")).items()}
    tv_state = {}
    for key, tensor in source.state_dict().items():
        module, _, leaf = key.rpartition(".")
        if leaf != "num_batches_tracked":
            tv_state[f"{inverse[module]}.{leaf}"] = tensor
    src = tmp_path / "efficientnet_b0_tv.pth"
    torch.save(tv_state, src)
    out = tmp_path / "b0.safetensors"
    assert main(["convert", str(src), "--from", "torchvision", "--model", "b0", "-o", str(out)]) == 0
    meta = header(out)
    assert (meta["padding"], meta["bn_eps"], meta["settings_from"]) == ("symmetric", 1e-5, "efficientnet_b0.tv_in1k")
    assert meta["top1"] is None  # not torchvision's file: its accuracy is not claimed
    model = create_model("efficientnet_b0", str(out)).eval()
    with torch.no_grad():
        expected = source(batch)
        assert expected.isfinite().all() and expected.std() > 0
        assert torch.equal(model(batch), expected)


def test_fine_tuned_checkpoint_with_its_own_labels(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    model = build_model("efficientnet_lite0", num_classes=3)
    src = tmp_path / "finetuned.pth"
    torch.save({"state_dict": model.state_dict()}, src)
    labels = tmp_path / "labels.txt"
    labels.write_text("cat\ndog\nbird\n")
    out = tmp_path / "finetuned.safetensors"
    assert main(["convert", str(src), "--from", "timm", "--model", "lite0", "-o", str(out),
                 "--entry", "tf_in1k", "--class-names", str(labels)]) == 0
    assert capsys.readouterr().err == ""  # --entry says how it was trained: nothing guessed
    meta = header(out)
    assert meta["num_classes"] == 3 and meta["labels"] == ["cat", "dog", "bird"] and meta["padding"] == "tf_same"
    names = {prediction.label for prediction in Predictor(weights=str(out), topk=3)(CAT)}
    assert names == {"cat", "dog", "bird"}

    labels.write_text("cat\ndog\n")  # --labels: the name before 0.4.1, still taken
    assert main(["convert", str(src), "--model", "lite0", "-o", str(out), "--force", "--labels", str(labels)]) == 1
    assert "--class-names has 2 names but the classifier has 3 classes" in capsys.readouterr().err


def test_a_file_no_entry_describes_gets_its_source_defaults_with_a_warning(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Issue 14: the fallback (symmetric padding, eps 1e-5, ImageNet mean/std) used to be silent."""
    src = tmp_path / "mine.pth"
    torch.save(build_model("efficientnet_lite0", num_classes=3).state_dict(), src)  # no registered lite0 has 3 classes
    out = tmp_path / "mine.safetensors"
    assert main(["convert", str(src), "--model", "lite0", "-o", str(out)]) == 0
    captured = capsys.readouterr()
    assert captured.err == (
        "effnet convert: warning: no registered entry describes mine.pth: using timm's defaults (padding symmetric, "
        "BatchNorm eps 1e-05, ImageNet mean/std at 224px); pass --entry TAG if it was trained with another entry's "
        "settings\n")
    assert "(from timm file mine.pth, no registered entry: timm defaults)" in captured.out
    meta = header(out)
    assert (meta["padding"], meta["bn_eps"], meta["preprocessing"]["mean"]) == ("symmetric", 1e-5, [0.485, 0.456, 0.406])


def test_errors_are_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    source = str(get_weights("efficientnet_lite0.tf_in1k").locate())
    out = tmp_path / "x.safetensors"
    out.write_bytes(b"")
    assert main(["convert", source, "--model", "lite0", "-o", str(out)]) == 0  # writers replace and say so
    assert f"replaced {out}" in capsys.readouterr().out and out.stat().st_size > 1_000_000
    assert main(["convert", source, "--model", "lite9", "-o", str(tmp_path / "y.safetensors")]) == 2
    assert "unknown model 'lite9'" in capsys.readouterr().err
    assert main(["convert", source, "--model", "lite1", "-o", str(tmp_path / "z.safetensors")]) == 2
    err = capsys.readouterr().err  # Lite0's tensors are also B0-small's (no SE, same widths): both are named
    assert err == f"effnet: error: {source}: weights are for efficientnet_b0_small or efficientnet_lite0, not " \
                  "efficientnet_lite1\n"
    assert not (tmp_path / "z.safetensors").exists()
    converted = tmp_path / "lite0.safetensors"
    assert main(["convert", source, "--model", "lite0", "-o", str(converted)]) == 0
    capsys.readouterr()
    assert main(["convert", str(converted), "--model", "lite1", "-o", str(tmp_path / "z.safetensors")]) == 2
    assert capsys.readouterr().err == f"effnet: error: {converted}: weights are for efficientnet_lite0, not " \
                                      "efficientnet_lite1\n"  # the header names its model: the same exit code
    assert main(["convert", source, "--model", "lite0", "-o", str(tmp_path / "w.pth")]) == 2
    assert "must end in .safetensors" in capsys.readouterr().err


def test_a_wrong_from_names_the_layout_the_file_has(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    source = get_weights("efficientnet_lite0.tf_in1k").locate()  # lukemelas tensor names
    out = tmp_path / "x.safetensors"
    assert main(["convert", str(source), "--from", "timm", "--model", "lite0", "-o", str(out)]) == 1
    err = capsys.readouterr().err
    assert "has lukemelas's tensor names, not timm's; use --from lukemelas" in err and err.count("\n") == 1
    assert not out.exists()
