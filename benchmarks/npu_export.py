"""NPU-ready ONNX: every opset 11-23 against torch, and NV12 input on real photos.

For each model and opset: a static export (batch 1, the weights' size; TF-"same" padding
frozen into the convolutions), the export's own check (max |onnxruntime - torch| on random
inputs), the ops in the graph, and top-1 agreement with torch on the real photos of
``onnx_photos.py``. Then the NV12-input graph on the same photos, each framed to the NV12
size the way ``effnet predict`` frames it (cover, centre cut), converted to NV12 in numpy and
run through the graph, vs torch on the same RGB frame.

    python benchmarks/npu_export.py [--opsets 11 13 18 23] [--frames 224x224 480x640]

B0 runs with random weights (seed 0, TF "same" padding, BN eps 1e-3) when its pretrained
file is not in the local cache, its BatchNorm statistics re-estimated on the photos so that
activations and logits have a trained network's scale (a fresh BatchNorm would shrink them to
~1e-8 and make every difference look tiny). The graph and padding are the same.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np
import onnx
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from onnx_photos import real_photos  # noqa: E402

from effnet.data.nv12 import fit_frame, rgb_to_nv12  # noqa: E402
from effnet.data.transforms import Preprocessing  # noqa: E402
from effnet.deploy.export.onnx import export_network  # noqa: E402
from effnet.models.network import build_model  # noqa: E402
from effnet.runtime.onnxruntime_engine import OnnxRuntimeEngine, open_session  # noqa: E402
from effnet.runtime.torch_engine import TorchEngine  # noqa: E402


def load(arch: str, photos: dict[str, np.ndarray]) -> tuple[torch.nn.Module, str]:
    try:
        return TorchEngine.load(arch, "default", channels_last=False).model, "pretrained"
    except Exception:  # not cached here and no download allowed: random weights, same graph
        torch.manual_seed(0)
        net = build_model(arch, padding="tf_same", bn_eps=1e-3)
        for module in net.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.reset_running_stats()
                module.momentum = None  # a plain average over the photos
        batch = np.stack([Preprocessing(size=net.plan.eval_resolution)(image) for image in photos.values()])
        with torch.no_grad():
            net.train()(torch.from_numpy(batch))
        return net.eval(), "random+BN stats"


def torch_logits(net: torch.nn.Module, batch: np.ndarray) -> np.ndarray:
    with torch.inference_mode():
        return net(torch.from_numpy(batch)).numpy()


def openvino_logits(path: Path, batch: np.ndarray) -> np.ndarray:
    """The static file run by OpenVINO's CPU plugin in f32 (it would pick bf16 on this CPU)."""
    import openvino

    compiled = openvino.Core().compile_model(str(path), "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
    return np.concatenate([compiled(row[None])[0] for row in batch])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="*", default=["efficientnet_lite0", "efficientnet_b0"])
    parser.add_argument("--opsets", nargs="+", type=int, default=list(range(11, 24)))
    parser.add_argument("--frames", nargs="*", default=["224x224", "480x640"], help="NV12 frame sizes (none: skip)")
    parser.add_argument("--nv12-opsets", nargs="+", type=int, default=[11, 18])
    args = parser.parse_args()
    torch.set_num_threads(2)
    photos = real_photos()
    print(f"torch {torch.__version__}, onnxruntime {__import__('onnxruntime').__version__}, "
          f"{torch.get_num_threads()} threads, {len(photos)} real photos")
    folder = Path(tempfile.mkdtemp())
    print("\nmodel               weights          opset  check max|ort-torch|  photos max|ort-torch|  "
          "top-1 same  photos max|openvino-torch|  ops")
    for arch in args.models:
        net, weights = load(arch, photos)
        entry = getattr(net, "pretrained_cfg", None)
        recipe = entry.preprocessing if entry else Preprocessing(size=net.plan.eval_resolution)
        batch = np.stack([recipe(image) for image in photos.values()])
        expected = torch_logits(net, batch)
        for opset in args.opsets:
            result = export_network(net, folder / f"{arch}_{opset}.onnx", batch=1, size=recipe.size, opset=opset)
            session = open_session(result.path, threads=2)
            actual = np.concatenate([session.run(None, {"input": row[None]})[0] for row in batch])
            ops = sorted({node.op_type for node in onnx.load(str(result.path)).graph.node})
            same = int((actual.argmax(1) == expected.argmax(1)).sum())
            openvino = np.abs(openvino_logits(result.path, batch) - expected).max()
            print(f"{arch:<19} {weights:<16} {opset:>5}  {result.checks[0]['max_abs_diff']:>19.2e}  "
                  f"{np.abs(actual - expected).max():>20.2e}  {same:>4}/{len(batch):<5}  {openvino:>24.2e}  "
                  f"{','.join(ops)}")
    net, weights = load("efficientnet_lite0", photos)
    recipe = net.pretrained_cfg.preprocessing
    print("\nNV12 input (efficientnet_lite0, " + weights + "): graph on numpy NV12 vs torch on the same RGB frame")
    print("frame     range  opset  max|ort-torch|  top-1 same  differing photos")
    for frame in args.frames:
        height, width = map(int, frame.split("x"))
        for colour_range in ("video", "full"):
            for opset in args.nv12_opsets:
                result = export_network(net, folder / f"nv12_{frame}_{colour_range}_{opset}.onnx", batch=1,
                                        opset=opset, nv12=(height, width), nv12_range=colour_range)
                engine = OnnxRuntimeEngine.load(None, str(result.path), threads=2)
                frames = [engine.nv12_frame(image) for image in photos.values()]
                rgb = [fit_frame(image, height, width) for image in photos.values()]
                expected = torch_logits(net, np.stack([recipe(image) for image in rgb]))
                actual = np.concatenate([engine.session.run(None, {"image": rgb_to_nv12(image, colour_range)[None]})[0]
                                         for image in rgb])
                assert all(np.array_equal(a, rgb_to_nv12(b, colour_range)) for a, b in zip(frames, rgb))
                same = int((actual.argmax(1) == expected.argmax(1)).sum())
                top2 = np.sort(expected, axis=1)[:, -2:]
                differ = [f"{name} (torch's top-2 margin {top2[i, 1] - top2[i, 0]:.3f})"
                          for i, name in enumerate(photos) if actual[i].argmax() != expected[i].argmax()]
                print(f"{frame:<9} {colour_range:<6} {opset:>5}  {np.abs(actual - expected).max():>14.3f}  "
                      f"{same:>4}/{len(rgb)}  {', '.join(differ)}")


if __name__ == "__main__":
    main()
