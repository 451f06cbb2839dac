"""B0 int8 speed by QDQ placement, against the float model pinned to 224x224 (speed only).

Placements, all with ``s8-safe`` GEMM weights and 64 calibration crops of the real photos:

- ``default``: what ``effnet quantize`` writes (convs, adds, pooling int8; SiLU and the
  squeeze-excitation multiply float, so every block dequantizes and requantizes around them);
- ``pointwise_only``: only the 1x1 expand/project convs (and the residual adds, classifier)
  int8, the depthwise conv + SiLU + squeeze-excitation of each block one float region: fewer
  dequantize/quantize pairs per block;
- ``pointwise_no_add``: the same with the residual adds float.

The weights are random (speed does not depend on them; there are no real B0 ImageNet
weights offline), so the relative logits error printed is only a sanity check.

    python benchmarks/quantize_b0_placement.py --out runs/quantize_bench
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import onnx

sys.path.insert(0, str(Path(__file__).resolve().parent))

from onnx_photos import augmented, real_photos, write_folder  # noqa: E402

from effnet.data.transforms import Preprocessing  # noqa: E402
from effnet.deploy.export.onnx import export  # noqa: E402
from effnet.deploy.quantize.calibration import calibrate, load_crops, normalize, select_images  # noqa: E402
from effnet.deploy.quantize.graph import fix_input_size, prepare_graph  # noqa: E402
from effnet.deploy.quantize.recipe import Settings  # noqa: E402
from effnet.deploy.quantize.report import int8_op_counts, measure_speed  # noqa: E402
from effnet.deploy.quantize.scales import quantize_model  # noqa: E402
from effnet.deploy.quantize.sensitivity import relative_error  # noqa: E402
from effnet.deploy.quantize.sessions import run_batches, session  # noqa: E402
from effnet.runtime.onnx_metadata import read_metadata  # noqa: E402

SIZE = 224


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("runs/quantize_bench"))
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    out = args.out
    out.mkdir(parents=True, exist_ok=True)
    model = out / "b0_random.onnx"
    if not model.exists():
        import torch

        torch.manual_seed(0)
        export("efficientnet_b0", "none", model)
    fixed = out / f"b0_random.fixed{SIZE}.onnx"
    onnx.save(fix_input_size(prepare_graph(onnx.load(str(model))), SIZE), str(fixed))
    prepared = out / "b0_random.prepared.onnx"
    from onnxruntime.quantization.shape_inference import quant_pre_process

    quant_pre_process(str(fixed), str(prepared))
    calib = out / "b0_placement_calib"
    if not calib.exists():
        write_folder(augmented(real_photos(), 3, seed=5), calib)
    preprocessing = Preprocessing.from_dict(read_metadata(str(model))["preprocessing"]).with_size(SIZE)
    crops, _, _ = load_crops(select_images(calib, 64), preprocessing)
    inputs = normalize(crops, preprocessing)

    graph = onnx.load(str(prepared))
    inferred = onnx.shape_inference.infer_shapes(graph)
    shapes = {v.name: [d.dim_value for d in v.type.tensor_type.shape.dim] for v in inferred.graph.value_info}
    weights = {init.name: list(init.dims) for init in graph.graph.initializer}
    pointwise = [node.name for node in graph.graph.node if node.op_type == "Conv"
                 and weights[node.input[1]][2:] == [1, 1] and shapes.get(node.output[0], [0] * 4)[2:] != [1, 1]]
    adds = [node.name for node in graph.graph.node if node.op_type in ("Add", "Gemm")]
    placements = {"default": None, "pointwise_only": pointwise + adds, "pointwise_no_add": pointwise}
    reference = run_batches(session(fixed), inputs[:16])
    files = {}
    for name, nodes in placements.items():
        settings = Settings(gemm_weights="s8-safe")
        cache = out / f"b0_{name}.ranges.json"
        calibrate(prepared, inputs, settings, cache)
        files[name] = out / f"b0_{name}.int8.onnx"
        quantize_model(prepared, files[name], cache, settings, nodes_to_quantize=nodes)
        error = relative_error(run_batches(session(files[name]), inputs[:16]), reference)
        print(f"{name}: relative logits error {error:.4f}, onnxruntime runs {int8_op_counts(files[name])}")
    image = np.random.default_rng(0).standard_normal((3, SIZE, SIZE)).astype(np.float32)
    speeds = measure_speed([fixed, *files.values()], image, args.threads, rounds=args.rounds)
    print(f"\n| B0 {SIZE}x{SIZE}, {args.threads} threads | bs1 ms | bs16 img/s | speedup bs1 | speedup bs16 |")
    print("|---|---:|---:|---:|---:|")
    for name, speed in zip(["fp32 (fixed size)", *files], speeds):
        print(f"| {name} | {speed['latency_bs1_ms']:.2f} | {speed['throughput_bs16_img_s']:.1f} | "
              f"{speeds[0]['latency_bs1_ms'] / speed['latency_bs1_ms']:.2f}x | "
              f"{speed['throughput_bs16_img_s'] / speeds[0]['throughput_bs16_img_s']:.2f}x |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
