"""The registry's entries agree with what their publishers state about them."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import pytest

from effnet.cli import main
from effnet.errors import WeightsError
from effnet.models.spec import Padding
from effnet.models.variants import VARIANTS, resolve
from effnet.weights.catalog import ENTRIES
from effnet.weights.registry import DEFAULTS, get_weights, list_weights
from effnet.weights.sources import SOURCES

URL_ENTRIES = [e for e in ENTRIES.values() if e.url]
#: publishers that give no checksum (and name files without one): entries with sha256=None
UNVERIFIED_SOURCES = {"paddle", "mindspore"}


def test_every_entry_is_for_a_known_variant_and_source() -> None:
    for entry in ENTRIES.values():
        assert entry.arch in VARIANTS, entry.name
        assert entry.name.startswith(entry.arch + "."), entry.name
        assert entry.source in SOURCES and SOURCES[entry.source].convertible, entry.name
        assert entry.preprocessing.size > 0 and 0 < entry.preprocessing.crop_fraction <= 1


def test_the_well_known_checkpoints_are_registered() -> None:
    """torchvision B0-B7 and V2 S/M/L; timm's TF ports of B0-B8, L2 and V2 B0-B3/S/M/L/XL;
    lukemelas B0-B7 (issue 4)."""
    by_source: dict[str, set[str]] = {}
    for entry in ENTRIES.values():
        by_source.setdefault(entry.source, set()).add(entry.arch)
    b = {f"efficientnet_b{i}" for i in range(8)}
    assert by_source["torchvision"] == b | {"efficientnetv2_s", "efficientnetv2_m", "efficientnetv2_l"}
    assert by_source["lukemelas"] >= b
    v2 = {f"efficientnetv2_{s}" for s in ("b0", "b1", "b2", "b3", "s", "m", "l", "xl")}
    assert by_source["timm"] >= b | {"efficientnet_b8", "efficientnet_l2"} | v2
    assert by_source["paddle"] == b | {"efficientnet_b0_small"}  # issue 19: PaddleClas's zoo
    assert by_source["mindspore"] == {"efficientnet_b0", "efficientnet_b1"}  # the files mindcv lists


def test_entries_without_a_checksum_are_the_unverifiable_ones_and_never_a_default() -> None:
    unverified = [e for e in ENTRIES.values() if not e.sha256]
    assert unverified and {e.source for e in unverified} == UNVERIFIED_SOURCES
    assert all(e.url and e.url.endswith((".pdparams", ".ckpt")) for e in unverified)
    assert not {e.name for e in unverified} & set(DEFAULTS.values())
    assert "efficientnet_b0_small" not in DEFAULTS  # its only weights are PaddleClas's


def test_effnet_models_lists_them(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["models", "--json"]) == 0
    known = {row["model"]: row["weights_known"] for row in json.loads(capsys.readouterr().out)}
    assert "efficientnet_b0_small.paddle_in1k" in known["efficientnet_b0_small"]
    assert {"efficientnet_b1.paddle_in1k", "efficientnet_b1.mindcv_in1k"} <= set(known["efficientnet_b1"])


@pytest.mark.parametrize("entry", [e for e in URL_ENTRIES if e.sha256], ids=lambda e: e.name)
def test_checksum_is_the_published_one(entry) -> None:  # noqa: ANN001
    """A full sha256 where one is published, else the prefix the file name carries; a full
    hash must start with the file name's prefix (torch.hub names files ``name-<sha256[:8]>``)."""
    prefix = re.search(r"-([0-9a-f]{8})\.pth$", entry.url).group(1)
    assert re.fullmatch(r"[0-9a-f]{8}|[0-9a-f]{64}", entry.sha256)
    assert entry.sha256.startswith(prefix)


#: The file each torchvision weights enum downloads today (torchvision/models/efficientnet.py since
#: 0.16.1/0.17: the V1 files renamed to their true hash prefixes, pytorch/vision#8036).
TORCHVISION_FILES = {
    "efficientnet_b0.tv_in1k": "efficientnet_b0_rwightman-7f5810bc.pth",
    "efficientnet_b1.tv_in1k": "efficientnet_b1_rwightman-bac287d4.pth",
    "efficientnet_b1.tv2_in1k": "efficientnet_b1-c27df63c.pth",
    "efficientnet_b2.tv_in1k": "efficientnet_b2_rwightman-c35c1473.pth",
    "efficientnet_b3.tv_in1k": "efficientnet_b3_rwightman-b3899882.pth",
    "efficientnet_b4.tv_in1k": "efficientnet_b4_rwightman-23ab8bcd.pth",
    "efficientnet_b5.tv_in1k": "efficientnet_b5_lukemelas-1a07897c.pth",
    "efficientnet_b6.tv_in1k": "efficientnet_b6_lukemelas-24a108a5.pth",
    "efficientnet_b7.tv_in1k": "efficientnet_b7_lukemelas-c5b4e57e.pth",
    "efficientnetv2_s.tv_in1k": "efficientnet_v2_s-dd5fe13b.pth",
    "efficientnetv2_m.tv_in1k": "efficientnet_v2_m-dc08266a.pth",
    "efficientnetv2_l.tv_in1k": "efficientnet_v2_l-59c71312.pth",
}


def test_torchvision_entries_are_the_files_torchvision_downloads() -> None:
    """Issue 14: B1 kept the pre-rename name (533bc792), whose hash was never the file's."""
    assert {e.name: e.url for e in ENTRIES.values() if e.source == "torchvision"} == {
        name: "https://download.pytorch.org/models/" + file for name, file in TORCHVISION_FILES.items()}


def test_torchvision_entries_match_torchvision_meta() -> None:
    """torchvision publishes exact parameter counts and ``resize_size``: our architecture must
    have that many parameters, and our preprocessing must resize the shorter side to exactly
    that size before the centre crop."""
    entries = [e for e in ENTRIES.values() if e.source == "torchvision"]
    for entry in entries:
        assert resolve(entry.arch).num_params() == entry.num_params, entry.name
        pre = entry.preprocessing
        assert math.floor(pre.size / pre.crop_fraction) == entry.extra["resize_size"], entry.name
        assert pre.crop_mode == "resize_then_center_crop" and entry.padding == Padding.SYMMETRIC


def test_padding_and_eps_follow_how_each_source_evaluates() -> None:
    for entry in ENTRIES.values():
        tf_trained = entry.tag.startswith("tf_") or entry.source == "lukemelas"
        if entry.source == "paddle":
            # PaddleClas: "SAME" frozen at the nominal size, B0-small "DYNAMIC" (symmetric); epsilon=1e-3
            small = entry.arch == "efficientnet_b0_small"
            assert (entry.padding, entry.bn_eps) == (Padding.SYMMETRIC if small else Padding.TF_SAME_STATIC, 1e-3)
            pre = entry.preprocessing  # ResizeImage(resize_short=S + 32), bilinear; CropImage(S)
            assert (math.floor(pre.size / pre.crop_fraction), pre.interpolation) == (pre.size + 32, "bilinear")
        elif entry.source == "mindspore":
            # mindcv: MindSpore's pad_mode="same" and BatchNorm default eps below B5
            assert (entry.padding, entry.bn_eps) == (Padding.TF_SAME, 1e-5), entry.name
            pre = entry.preprocessing  # Resize(floor(S / 0.875)), bicubic; CenterCrop(S)
            assert (pre.crop_fraction, pre.interpolation) == (0.875, "bicubic"), entry.name
        elif entry.source == "torchvision":
            # torchvision: B0-B4 built with BatchNorm2d's default eps, B5-B7 and V2 with 1e-3
            expected_eps = 1e-5 if entry.arch in {f"efficientnet_b{i}" for i in range(5)} else 1e-3
            assert (entry.padding, entry.bn_eps) == (Padding.SYMMETRIC, expected_eps), entry.name
        elif tf_trained:
            assert (entry.padding, entry.bn_eps) == (Padding.TF_SAME, 1e-3), entry.name
        else:
            assert (entry.padding, entry.bn_eps) == (Padding.SYMMETRIC, 1e-5), entry.name


def test_reported_accuracy_says_where_it_comes_from() -> None:
    for entry in ENTRIES.values():
        assert entry.top1 is not None and 70 < entry.top1 < 90, entry.name
        assert entry.top5 is None or entry.top1 < entry.top5 < 100, entry.name
        assert entry.reported_by, entry.name


def test_defaults() -> None:
    for arch in ("efficientnet_lite0", "efficientnet_lite1", "efficientnet_lite2"):
        assert get_weights("default", arch).file.startswith("package:")  # works offline
    for arch, name in DEFAULTS.items():
        entry = ENTRIES[name]
        assert entry.arch == arch and entry.sha256
        in1k_only = [e for e in list_weights(arch) if not e.extra_training_data and e.top1 and e.sha256]
        if in1k_only and not entry.file:
            assert not entry.extra_training_data
            assert entry.top1 == max(e.top1 for e in in1k_only)
    assert DEFAULTS["efficientnet_l2"] == "efficientnet_l2.tf_ns_jft_in1k"  # only extra-data weights exist


def test_lookup_by_tag_and_errors() -> None:
    assert get_weights("tv_in1k", "b3").name == "efficientnet_b3.tv_in1k"
    assert get_weights("efficientnetv2_s.tf_in21k_ft_in1k").arch == "efficientnetv2_s"
    with pytest.raises(WeightsError, match="efficientnet_b3.lukemelas_in1k"):
        get_weights("nope", "efficientnet_b3")
    with pytest.raises(WeightsError, match="are for efficientnet_b1") as mismatch:
        get_weights("efficientnet_b1.tv_in1k", "efficientnet_b0")
    assert mismatch.value.exit_code == 2  # a wrong name on the command line, like an unknown model


def test_unknown_weights_exit_like_an_unknown_model(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    source = str(get_weights("efficientnet_lite0.tf_in1k").locate())
    code = main(["convert", source, "--model", "lite0", "--entry", "nosuchtag", "-o", str(tmp_path / "x.safetensors")])
    err = capsys.readouterr().err
    assert code == 2 and "unknown weights 'nosuchtag'; known entries: efficientnet_lite0." in err


def test_an_existing_file_of_another_kind_is_named_as_such(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    """``--weights notes.txt`` (or a photo put in the wrong place) is a file that exists: saying
    "unknown weights 'notes.txt'; known entries: ..." sent the user looking for a tag."""
    monkeypatch.chdir(tmp_path)
    Path("notes.txt").write_text("hello\n")
    with pytest.raises(WeightsError, match=r"^notes.txt: not a weights file effnet reads \(\.safetensors, \.pth") as error:
        get_weights("notes.txt", "efficientnet_lite0")
    assert error.value.exit_code == 2
    assert main(["predict", "--weights", "notes.txt", "notes.txt"]) == 2
    assert capsys.readouterr().err.startswith("effnet: error: notes.txt: not a weights file effnet reads")


def test_docs_list_every_entry() -> None:
    docs = (Path(__file__).resolve().parents[2] / "docs" / "weights.md").read_text()
    for name in ENTRIES:
        assert f"`{name}`" in docs, name
