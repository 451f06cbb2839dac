"""The Triton model repository: layout, and a config.pbtxt that Triton's own schema parses.

The schema is the part of Triton's ``model_config.proto`` (triton-inference-server/common,
protobuf/model_config.proto: package ``inference``) that the generated config uses, with
the official field names, numbers and enum values, rebuilt here as a protobuf descriptor.
``text_format.Parse`` rejects unknown fields, wrong enum names and malformed syntax, so a
config that parses here parses in Triton.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import onnxruntime
import pytest
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory, text_format
from onnx import TensorProto, helper, numpy_helper

from effnet.data.labels import imagenet_names
from effnet.data.transforms import Preprocessing
from effnet.errors import EffnetError
from effnet.deploy.export import triton as triton_module
from effnet.deploy.export.onnx import ExportResult
from effnet.deploy.export.triton import Tensor, export_triton, triton_config, write_model_repository
from effnet.errors import UsageError
from effnet.runtime.onnx_metadata import INPUT_FLOAT

F = descriptor_pb2.FieldDescriptorProto

# (message, [(field, number, type, label, type_name)]) from model_config.proto
SCHEMA = {
    "ModelTensorReshape": [("shape", 1, F.TYPE_INT64, F.LABEL_REPEATED, None)],
    "ModelInput": [
        ("name", 1, F.TYPE_STRING, F.LABEL_OPTIONAL, None),
        ("data_type", 2, F.TYPE_ENUM, F.LABEL_OPTIONAL, ".inference.DataType"),
        ("format", 3, F.TYPE_ENUM, F.LABEL_OPTIONAL, ".inference.ModelInput.Format"),
        ("dims", 4, F.TYPE_INT64, F.LABEL_REPEATED, None),
        ("reshape", 5, F.TYPE_MESSAGE, F.LABEL_OPTIONAL, ".inference.ModelTensorReshape"),
    ],
    "ModelOutput": [
        ("name", 1, F.TYPE_STRING, F.LABEL_OPTIONAL, None),
        ("data_type", 2, F.TYPE_ENUM, F.LABEL_OPTIONAL, ".inference.DataType"),
        ("dims", 3, F.TYPE_INT64, F.LABEL_REPEATED, None),
        ("label_filename", 4, F.TYPE_STRING, F.LABEL_OPTIONAL, None),
    ],
    "ModelDynamicBatching": [
        ("preferred_batch_size", 1, F.TYPE_INT32, F.LABEL_REPEATED, None),
        ("max_queue_delay_microseconds", 2, F.TYPE_UINT64, F.LABEL_OPTIONAL, None),
        ("preserve_ordering", 3, F.TYPE_BOOL, F.LABEL_OPTIONAL, None),
    ],
    "ModelInstanceGroup": [
        ("name", 1, F.TYPE_STRING, F.LABEL_OPTIONAL, None),
        ("count", 2, F.TYPE_INT32, F.LABEL_OPTIONAL, None),
        ("gpus", 3, F.TYPE_INT32, F.LABEL_REPEATED, None),
        ("kind", 4, F.TYPE_ENUM, F.LABEL_OPTIONAL, ".inference.ModelInstanceGroup.Kind"),
    ],
    "ModelParameter": [("string_value", 1, F.TYPE_STRING, F.LABEL_OPTIONAL, None)],
    "ModelConfig": [
        ("name", 1, F.TYPE_STRING, F.LABEL_OPTIONAL, None),
        ("platform", 2, F.TYPE_STRING, F.LABEL_OPTIONAL, None),
        ("max_batch_size", 4, F.TYPE_INT32, F.LABEL_OPTIONAL, None),
        ("input", 5, F.TYPE_MESSAGE, F.LABEL_REPEATED, ".inference.ModelInput"),
        ("output", 6, F.TYPE_MESSAGE, F.LABEL_REPEATED, ".inference.ModelOutput"),
        ("instance_group", 7, F.TYPE_MESSAGE, F.LABEL_REPEATED, ".inference.ModelInstanceGroup"),
        ("dynamic_batching", 11, F.TYPE_MESSAGE, F.LABEL_OPTIONAL, ".inference.ModelDynamicBatching"),
        ("parameters", 14, F.TYPE_MESSAGE, F.LABEL_REPEATED, ".inference.ModelConfig.ParametersEntry"),
        ("backend", 17, F.TYPE_STRING, F.LABEL_OPTIONAL, None),
    ],
}
ENUMS = {
    "DataType": ["TYPE_INVALID", "TYPE_BOOL", "TYPE_UINT8", "TYPE_UINT16", "TYPE_UINT32", "TYPE_UINT64",
                 "TYPE_INT8", "TYPE_INT16", "TYPE_INT32", "TYPE_INT64", "TYPE_FP16", "TYPE_FP32", "TYPE_FP64",
                 "TYPE_STRING", "TYPE_BF16"],
    "ModelInput.Format": ["FORMAT_NONE", "FORMAT_NHWC", "FORMAT_NCHW"],
    "ModelInstanceGroup.Kind": ["KIND_AUTO", "KIND_GPU", "KIND_CPU", "KIND_MODEL"],
}


def model_config_class() -> type:
    file = descriptor_pb2.FileDescriptorProto(name="effnet_test_model_config.proto", package="inference",
                                              syntax="proto3")
    messages = {}
    for name, fields in SCHEMA.items():
        message = file.message_type.add(name=name)
        messages[name] = message
        for field, number, kind, label, type_name in fields:
            entry = message.field.add(name=field, number=number, type=kind, label=label)
            if type_name:
                entry.type_name = type_name
    for qualified, values in ENUMS.items():
        owner, _, name = qualified.rpartition(".")
        enum = (messages[owner].enum_type if owner else file.enum_type).add(name=name)
        for number, value in enumerate(values):
            enum.value.add(name=value, number=number)
    entry = messages["ModelConfig"].nested_type.add(name="ParametersEntry")
    entry.options.map_entry = True
    entry.field.add(name="key", number=1, type=F.TYPE_STRING, label=F.LABEL_OPTIONAL)
    entry.field.add(name="value", number=2, type=F.TYPE_MESSAGE, label=F.LABEL_OPTIONAL,
                    type_name=".inference.ModelParameter")
    pool = descriptor_pool.DescriptorPool()
    pool.Add(file)
    return message_factory.GetMessageClass(pool.FindMessageTypeByName("inference.ModelConfig"))


ModelConfig = model_config_class()


def tiny_graph(path: Path, batch: int | str = "N", classes: int = 1000, size: int = 224) -> Path:
    """An ONNX 'classifier' (global pool + linear) shaped like an exported EfficientNet."""
    weight = numpy_helper.from_array(np.random.default_rng(0).normal(size=(3, classes)).astype(np.float32), "w")
    graph = helper.make_graph(
        [helper.make_node("GlobalAveragePool", ["image"], ["pooled"]),
         helper.make_node("Flatten", ["pooled"], ["flat"]),
         helper.make_node("MatMul", ["flat", "w"], ["logits"])],
        "tiny",
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, [batch, 3, size, size])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [batch, classes])],
        [weight],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    onnx.checker.check_model(model)
    onnx.save(model, path)
    return path


def test_repository_layout_and_config(tmp_path: Path) -> None:
    preprocessing = Preprocessing(size=224).to_dict()
    folder = write_model_repository(tmp_path / "model_repository", "efficientnet_lite0",
                                    tiny_graph(tmp_path / "exported.onnx"), imagenet_names(), preprocessing,
                                    max_batch_size=16, max_queue_delay_us=2000, instances=2, kind="KIND_CPU")
    assert folder == tmp_path / "model_repository" / "efficientnet_lite0"
    assert sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file()) == [
        "1/model.onnx", "config.pbtxt", "labels.txt"]
    assert (folder / "labels.txt").read_text().splitlines() == list(imagenet_names())

    config = text_format.Parse((folder / "config.pbtxt").read_text(), ModelConfig())
    assert (config.name, config.backend, config.max_batch_size) == ("efficientnet_lite0", "onnxruntime", 16)
    (image,) = config.input
    assert (image.name, image.data_type, image.format, list(image.dims)) == ("image", 11, 2, [3, 224, 224])
    (logits,) = config.output
    assert (logits.name, logits.data_type, list(logits.dims), logits.label_filename) == (
        "logits", 11, [1000], "labels.txt")
    assert list(config.dynamic_batching.preferred_batch_size) == [4, 8, 16]
    assert config.dynamic_batching.max_queue_delay_microseconds == 2000
    (group,) = config.instance_group
    assert (group.count, group.kind) == (2, 2)  # KIND_CPU
    assert json.loads(config.parameters["preprocessing"].string_value) == json.loads(json.dumps(preprocessing))

    # the copied model runs, with the names and shapes the config promises
    session = onnxruntime.InferenceSession(str(folder / "1/model.onnx"), providers=["CPUExecutionProvider"])
    (out,) = session.run([logits.name], {image.name: np.zeros((5, *image.dims), np.float32)})
    assert out.shape == (5, *logits.dims)


def test_fixed_batch_export_turns_batching_off(tmp_path: Path) -> None:
    folder = write_model_repository(tmp_path, "m", tiny_graph(tmp_path / "b1.onnx", batch=1, classes=10),
                                    [f"c{i}" for i in range(10)])
    config = text_format.Parse((folder / "config.pbtxt").read_text(), ModelConfig())
    assert config.max_batch_size == 0 and not config.HasField("dynamic_batching")
    assert list(config.input[0].dims) == [1, 3, 224, 224] and list(config.output[0].dims) == [1, 10]
    assert not config.parameters


def test_names_with_quotes_survive(tmp_path: Path) -> None:
    text = triton_config('odd "name"\\', Tensor("in:0", "TYPE_FP32", (3, 8, 8)), Tensor("out", "TYPE_FP32", (2,)),
                         label_filename=None)
    config = text_format.Parse(text, ModelConfig())
    assert config.name == 'odd "name"\\' and config.input[0].name == "in:0" and not config.output[0].label_filename


def test_mismatches_are_one_line_errors(tmp_path: Path) -> None:
    model = tiny_graph(tmp_path / "m.onnx", classes=10)
    with pytest.raises(EffnetError, match="3 labels for a model with 10 outputs"):
        write_model_repository(tmp_path / "repo", "m", model, ["a", "b", "c"])
    garbage = tmp_path / "garbage.onnx"
    garbage.write_bytes(b"not a model")
    with pytest.raises(EffnetError, match="not a readable ONNX model"):
        write_model_repository(tmp_path / "repo", "m", garbage, ["a"])
    with pytest.raises(EffnetError):
        triton_config("m", Tensor("i", "TYPE_FP32", (3, 8, 8)), Tensor("o", "TYPE_FP32", (2,)), kind="KIND_TPU")


def test_export_triton_writes_a_repository_that_runs_like_the_weights(tmp_path: Path,
                                                                       example_photos: list[Path]) -> None:
    from effnet.data.images import load_image
    from effnet.runtime.predictor import Predictor

    repository = tmp_path / "model_repository"
    result, folder = export_triton("efficientnet_lite0", "default", repository, name="lite", max_batch_size=8,
                                   instances=2, kind="KIND_CPU")
    assert folder == repository / "lite" and result.path == folder / "1" / "model.onnx"
    assert [check["what"] for check in result.checks] == ["network"]  # one fixed size: one shape to check
    config = text_format.Parse((folder / "config.pbtxt").read_text(), ModelConfig())
    assert (config.name, config.max_batch_size, list(config.input[0].dims)) == ("lite", 8, [3, 224, 224])
    assert (config.instance_group[0].count, config.instance_group[0].kind) == (2, 2)
    assert (folder / "labels.txt").read_text().splitlines() == list(imagenet_names())

    # a Triton client preprocesses as the config's parameter says, then runs the copied model
    preprocessing = Preprocessing.from_dict(json.loads(config.parameters["preprocessing"].string_value))
    image = load_image(example_photos[0])
    session = onnxruntime.InferenceSession(str(folder / "1" / "model.onnx"), providers=["CPUExecutionProvider"])
    (logits,) = session.run([config.output[0].name], {config.input[0].name: preprocessing(image)[None]})
    expected = Predictor("efficientnet_lite0", engine="torch").logits([image])
    assert np.abs(logits - expected).max() < 1e-3 and logits.argmax() == expected.argmax()


def test_export_triton_refuses_what_triton_cannot_batch(tmp_path: Path) -> None:
    with pytest.raises(EffnetError, match="the model repository folder, not a .onnx file"):
        export_triton("efficientnet_lite0", None, tmp_path / "m.onnx")
    with pytest.raises(EffnetError, match="--max-batch must be at least 1"):
        export_triton("efficientnet_lite0", None, tmp_path / "repo", max_batch_size=0)
    assert not any(tmp_path.iterdir())


def test_export_triton_checks_the_repository_and_its_settings_before_exporting(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Everything that would stop the repository from being written fails before the export
    (which takes seconds to minutes), naming the path or the setting."""
    def export_started(*args, **kwargs):
        raise AssertionError("the export ran before the repository was checked")

    monkeypatch.setattr(triton_module, "export_network", export_started)
    (tmp_path / "file").write_text("a file")
    (tmp_path / "repo" / "lite").mkdir(parents=True)
    (tmp_path / "repo" / "lite" / "config.pbtxt").mkdir()
    (tmp_path / "repo" / "taken").write_text("a file where the model folder goes")
    cases = [
        ({"repository": tmp_path / "file"}, "is a file, not a folder"),
        ({"repository": tmp_path / "repo", "name": "taken"}, "is a file, not a folder"),
        ({"repository": tmp_path / "repo", "name": "lite"}, "config.pbtxt: it is a folder"),
        ({"repository": tmp_path / "repo", "name": "a/b"}, "a model name"),
        ({"repository": tmp_path / "repo", "name": ".."}, "a model name"),
        ({"repository": tmp_path / "repo", "instances": 0}, "instances >= 1"),
        ({"repository": tmp_path / "repo", "max_queue_delay_us": -1}, "max_queue_delay_us >= 0"),
        ({"repository": tmp_path / "repo", "kind": "KIND_TPU"}, "instance kind must be one of"),
    ]
    for options, message in cases:
        with pytest.raises(UsageError, match=message):
            export_triton("efficientnet_lite0", None, name=options.pop("name", "lite2"), **options)


def test_export_triton_replaces_a_model_already_there(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def small_export(net, output, **options):  # the export is tested in test_onnx.py; here, the layout
        tiny_graph(Path(output), classes=3, size=32)
        return ExportResult(Path(output), "tiny", 18, INPUT_FLOAT, metadata={
            "labels": ["a", "b", "c"], "num_classes": 3, "preprocessing": Preprocessing(size=32).to_dict()})

    monkeypatch.setattr(triton_module, "export_network", small_export)
    first, folder = export_triton("efficientnet_lite0", None, tmp_path / "repo", name="tiny")
    (folder / "labels.txt").write_text("stale\n")
    second, _ = export_triton("efficientnet_lite0", None, tmp_path / "repo", name="tiny")
    assert (first.replaced, second.replaced) == (False, True)
    assert (folder / "labels.txt").read_text().splitlines() == ["a", "b", "c"]
    assert sorted(p.name for p in folder.iterdir()) == ["1", "config.pbtxt", "labels.txt"]  # no temporary files
