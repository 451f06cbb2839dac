"""The effnet ONNX metadata contract: what the writer puts in a file, the reader gets back."""

from __future__ import annotations

from pathlib import Path

from effnet.runtime.onnx_metadata import FORMAT, INPUT_FLOAT, PREFIX, decode, encode, read_metadata


def test_values_round_trip_as_json_with_the_prefix() -> None:
    values = {"a": [1, 2], "b": "text", "c": {"size": 224}}
    encoded = encode(values)
    assert encoded == {"effnet.a": "[1, 2]", "effnet.b": "text", "effnet.c": '{"size": 224}'}
    assert decode({**encoded, "other.key": "ignored"}) == values
    assert decode({PREFIX + "plain": "not json"}) == {"plain": "not json"}


def test_a_written_file_reads_back_its_metadata(tmp_path: Path, tiny_classifier) -> None:
    metadata = read_metadata(tiny_classifier(tmp_path / "m.onnx", classes=3))
    assert metadata["format"] == FORMAT and metadata["input"] == INPUT_FLOAT
    assert (metadata["arch"], metadata["num_classes"], metadata["labels"]) == (
        "efficientnet_lite0", 3, ["thing0", "thing1", "thing2"])
    assert read_metadata(tiny_classifier(tmp_path / "bare.onnx", metadata=False)) == {}
