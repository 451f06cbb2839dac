"""PaddleClas: ``.pdparams`` read without Paddle (and without running the pickle), converted
strictly, and giving PaddleClas's own logits at the nominal and at an odd input size.

The reference is PaddleClas itself: ``fixtures/paddle_*`` are checkpoints of its EfficientNetB0
and EfficientNetB0_small (width 0.3, depth 0.5, 10 classes, random weights and BatchNorm
statistics) with the logits Paddle computed (``scripts/make_framework_fixtures.py``).
"""

from __future__ import annotations

import pickle
import re
from pathlib import Path

import numpy as np
import pytest
import torch

from effnet.cli import main
from effnet.errors import WeightsError, WeightsMismatchError, WrongArchitectureError
from effnet.models.spec import Padding
from effnet.models.variants import resolve
from effnet.weights.io import read_checkpoint
from effnet.weights.loading import create_model
from effnet.weights.pdparams import NAME_TABLE, read_pdparams
from effnet.weights.sources import detect_source, paddle

FRAMEWORK = "paddle"  # framework_case: the paddle_* fixtures (conftest.py)
FIXTURES = Path(__file__).parent / "fixtures"
B0 = FIXTURES / "paddle_b0_w03_d05.pdparams"
B0_SHAPE = {"width_mult": 0.3, "depth_mult": 0.5}


def test_logits_match_paddleclas(framework_case) -> None:  # noqa: ANN001
    """Read, detected, converted and loaded with the bare file's settings (B0: "SAME" frozen at
    224, B0-small: symmetric; eps 1e-3), at 224x224 and at 225x227."""
    settings = framework_case.settings
    model = create_model(settings["arch"], str(framework_case.checkpoint), **framework_case.shape).eval()
    small = settings["arch"] == "efficientnet_b0_small"
    assert (model.padding, model.bn_eps) == (Padding.SYMMETRIC if small else Padding.TF_SAME_STATIC, 1e-3)
    with torch.no_grad():
        for which in ("nominal", "odd"):
            logits = model(framework_case.inputs(which)).numpy()
            assert np.abs(logits - framework_case.logits[which]).max() < framework_case.tolerance(which), which


def test_the_padding_is_what_makes_odd_sizes_match(framework_case) -> None:  # noqa: ANN001
    """With the other padding the odd size misses: dynamic TF "same" for PaddleClas's frozen
    "SAME" (equal at 224, where the padding is the same), TF "same" for B0-small's symmetric."""
    small = framework_case.settings["arch"] == "efficientnet_b0_small"
    other = create_model(framework_case.settings["arch"], str(framework_case.checkpoint),
                         padding="tf_same", **framework_case.shape).eval()
    with torch.no_grad():
        nominal = np.abs(other(framework_case.inputs("nominal")).numpy() - framework_case.logits["nominal"]).max()
        odd = np.abs(other(framework_case.inputs("odd")).numpy() - framework_case.logits["odd"]).max()
    assert odd > 1e-2
    assert (nominal > 1e-2) if small else (nominal < framework_case.tolerance("nominal"))


def test_names_with_and_without_the_name_table(tmp_path: Path) -> None:
    """paddle.save adds a structured -> parameter name table; the structured names (Paddle loads
    by them) are the keys either way, and the table is dropped."""
    raw = pickle.loads(B0.read_bytes())  # our own committed fixture: trusted, so plain pickle
    assert raw[NAME_TABLE]["_ef.block.4.._dcn._conv._bn._mean"] == "_blocks.4._bn1_mean"
    state, metadata = read_checkpoint(B0)
    assert metadata == {} and NAME_TABLE not in state and len(state) == len(raw) - 1
    assert detect_source(state) == "paddle" and paddle.SOURCE.classifier_rows(state) == 10
    del raw[NAME_TABLE]
    bare = tmp_path / "no_table.pdparams"
    bare.write_bytes(pickle.dumps(raw, protocol=2))  # protocol 2 carries bytes through _codecs.encode
    untabled, _ = read_pdparams(bare)
    assert untabled.keys() == state.keys() and all(torch.equal(untabled[k], state[k]) for k in state)


def test_the_key_map_places_every_tensor_of_the_file() -> None:
    state, _ = read_pdparams(B0)
    plan = resolve("efficientnet_b0", num_classes=10, **B0_SHAPE)
    converted = paddle.from_paddle(state, plan)
    expected = {k: v for k, v in plan.tensor_shapes().items() if not k.endswith("num_batches_tracked")}
    assert {k: tuple(v.shape) for k, v in converted.items()} == expected
    assert torch.equal(converted["classifier.weight"], state["_fc.weight"].t())  # Linear (in, out) -> (out, in)
    assert torch.equal(converted["blocks.3.1.bn2.running_var"], state["_ef.block.4.._dcn._conv._bn._variance"])


def test_first_block_shortcut_is_refused() -> None:
    """PaddleClas never adds a shortcut to a stage's first block: at width 0.2 ours would."""
    state, _ = read_pdparams(B0)
    with pytest.raises(WeightsError, match=r"width 0.2 has a shortcut in blocks\.0\.0"):
        paddle.from_paddle(state, resolve("efficientnet_b0", num_classes=10, width_mult=0.2, depth_mult=0.5))


def _pdparams(arch: str, path: Path, num_classes: int = 10) -> None:
    """A .pdparams in PaddleClas's names with zero tensors of ``arch``'s shapes, as paddle.save writes it."""
    plan = resolve(arch, num_classes=num_classes)
    modules = {ours: theirs for theirs, ours in paddle.key_map(plan).items()}
    leaves = {ours: theirs for theirs, ours in paddle.LEAVES.items()}
    arrays = {}
    for key, shape in plan.tensor_shapes().items():
        module, _, leaf = key.rpartition(".")
        if leaf != "num_batches_tracked":
            arrays[f"{modules[module]}.{leaves[leaf]}"] = np.zeros(shape[::-1] if key == "classifier.weight" else shape,
                                                                  np.float32)
    path.write_bytes(pickle.dumps(arrays, protocol=4))


def test_a_checkpoint_of_another_variant_is_named(tmp_path: Path) -> None:
    """B0-small's file (no SE) loaded as B0: the tensors are exactly B0-small's, and Lite0's
    (the same shapes, another activation), so the error names both."""
    path = tmp_path / "EfficientNetB0_small.pdparams"
    _pdparams("efficientnet_b0_small", path)
    with pytest.raises(WrongArchitectureError, match=r"weights are for efficientnet_b0_small or efficientnet_lite0, "
                                                     r"not efficientnet_b0"):
        create_model("efficientnet_b0", str(path))
    assert create_model("efficientnet_b0_small", str(path)).padding == Padding.SYMMETRIC


def test_a_reduced_model_read_as_the_full_one_is_a_mismatch() -> None:
    with pytest.raises(WeightsMismatchError, match="weights do not fit efficientnet_b0"):
        create_model("efficientnet_b0", str(B0))


def test_convert_from_paddle(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """``effnet convert --from paddle``: a bare B0 file gets PaddleClas's settings."""
    path = tmp_path / "EfficientNetB0_pretrained.pdparams"
    _pdparams("efficientnet_b0", path, num_classes=1000)
    out = tmp_path / "b0.safetensors"
    assert main(["convert", str(path), "--from", "paddle", "--model", "b0", "-o", str(out)]) == 0
    summary = capsys.readouterr().out
    assert "settings of efficientnet_b0.paddle_in1k" in summary and "padding tf_same_static" in summary
    model = create_model(weights=str(out))
    assert (model.padding, model.bn_eps) == (Padding.TF_SAME_STATIC, 1e-3)
    assert model.pretrained_cfg.preprocessing == paddle.preprocessing(224)
    with pytest.raises(SystemExit):  # the choices are the registry's sources
        main(["convert", str(path), "--from", "paddlepaddle", "--model", "b0", "-o", str(out)])
    assert re.search(r"choose from .*'?paddle'?, '?mindspore'?\)", capsys.readouterr().err)


# -- reading: every way a file can be wrong -------------------------------------------------------
class _Payload:
    """Pickles as a call to ``open(marker, "w")``: executing it would create the marker file."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple:
        return (open, (str(self.marker), "w"))


@pytest.mark.parametrize("protocol", [2, 4])
def test_a_pickle_that_calls_code_is_refused_and_never_run(tmp_path: Path, protocol: int) -> None:
    marker = tmp_path / "executed"
    path = tmp_path / "evil.pdparams"
    path.write_bytes(pickle.dumps({"_fc.weight": np.zeros(3, np.float32), "x": _Payload(marker)}, protocol=protocol))
    with pytest.raises(WeightsError, match=r"refusing to load: the pickle asks for the Python global "
                                           r"'(io|builtins)\.open'") as refused:
        read_checkpoint(path)
    assert "\n" not in str(refused.value)
    assert not marker.exists()


def test_arrays_are_only_made_the_way_array_pickles_make_them(tmp_path: Path) -> None:
    class Huge:
        def __reduce__(self) -> tuple:
            return (np.ndarray, ((1 << 40,),))

    path = tmp_path / "huge.pdparams"
    path.write_bytes(pickle.dumps({"_fc.weight": Huge()}, protocol=4))
    with pytest.raises(WeightsError, match=r"refusing to load: the pickle calls numpy\.ndarray directly"):
        read_pdparams(path)
    path.write_bytes(pickle.dumps({"_fc.weight": np.array([1, "a"], dtype=object)}, protocol=4))
    with pytest.raises(WeightsError, match="refusing to load: the file holds an array of type object"):
        read_pdparams(path)


@pytest.mark.parametrize("cut", [1, 100, 50_000, -10])
def test_truncated(tmp_path: Path, cut: int) -> None:
    path = tmp_path / "cut.pdparams"
    path.write_bytes(B0.read_bytes()[:cut])
    with pytest.raises(WeightsError, match=r"corrupt or truncated \.pdparams file") as error:
        read_checkpoint(path)
    assert "\n" not in str(error.value)


def test_not_a_pdparams_file(tmp_path: Path) -> None:
    mindspore_file = tmp_path / "renamed.pdparams"
    mindspore_file.write_bytes((FIXTURES / "mindcv_b0_w02_d05.ckpt").read_bytes())
    with pytest.raises(WeightsError, match=r"not a Paddle \.pdparams file \(a pickle starts with 0x80"):
        read_checkpoint(mindspore_file)
    listed = tmp_path / "list.pdparams"
    listed.write_bytes(pickle.dumps([np.zeros(3)], protocol=4))
    with pytest.raises(WeightsError, match="not a Paddle state dict"):
        read_checkpoint(listed)
    text = tmp_path / "text.pdparams"
    text.write_bytes(pickle.dumps({"_fc.weight": "not an array"}, protocol=4))
    with pytest.raises(WeightsError, match=r"entry '_fc\.weight' is a str, not an array"):
        read_checkpoint(text)
