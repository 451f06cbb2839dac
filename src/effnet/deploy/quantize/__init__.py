"""Static int8 post-training quantization of an exported ONNX file that stays fast and accurate.

The recipe, and why (measured with ``benchmarks/quantize_bench.py``; docs/deploy.md):

- QDQ format, uint8 activations and int8 per-channel symmetric weights, the combination
  onnxruntime's x86 int8 kernels are built for.
- On x86 CPUs without VNNI (AVX2 only), onnxruntime multiplies uint8 x int8 pairs with
  ``vpmaddubsw``, whose 16-bit sums saturate: with 8-bit weights Lite0 agreed with fp32 on
  71% of the photos under the int8 kernels. The usual fix, 7-bit weights, costs half of every
  channel's resolution (89.6% agreement); uint8 weights (onnxruntime's u8u8 kernels, no
  saturation) are accurate but slower than fp32 at a fixed size. So the weights of
  GEMM-backed layers (regular and 1x1 convs, the classifier) get per-channel scales bounded
  by the largest pair of weights the kernel adds in 16 bits (``s8-safe``,
  ``scales.pair_safe_scales``): no saturation, about 102 of 127 levels per channel, int8
  speed. Depthwise convs keep 8 bits. This is the default on every CPU, VNNI or not: the
  file may run on another CPU than the one that built it, and on Lite0 it agreed with fp32
  as often as plain 8-bit weights on a VNNI CPU (``recipe.AUTO_GEMM_WEIGHTS``).
- Exports have a dynamic spatial size, so TF-"same" pads are computed at run time and each
  ``Pad`` ran as dequantize / float pad / quantize (about half of Lite0's int8 time). The
  size is pinned to the preprocessing's and the shape arithmetic folded
  (``graph.fix_input_size``).
- Activation ranges: the 99.999th percentile (Lite0 with ``s8-safe`` weights agreed with fp32
  on 97.9% of the photos, 95.8% with min/max ranges, 91.7% with entropy ranges).
- Bias correction removes the mean output shift of weight rounding (Lite0: relative logits
  error 0.098 -> 0.021).
- SiLU (``Sigmoid`` + ``Mul``) and the squeeze-excitation multiply stay float by default
  (the benchmark measures B0 with them int8 too).
- Sensitivity analysis: every layer (a conv or the classifier, with its activation) is
  quantized alone and the logits error it causes under the int8 kernels is measured; then
  float layers are added one at a time, most sensitive first, each kept only when the whole
  int8 model gets closer to float (``--keep-float``; ``sensitivity.choose_float_layers``).
  A layer between two int8 layers cannot stay float in onnxruntime: its
  ``WeightBiasQuantization`` rewrite quantizes such a layer's weights per-tensor at load time
  (``graph.requantized_by_onnxruntime``), which is what made the old search non-monotonic
  (Lite0: 0, 1, 2 float layers gave errors 0.0059, 0.23, 0.0033 in the issue; 0.0064,
  0.0060, 0.0037, then 0.060 with a third layer here). Such layers are only kept float
  together with the layer that feeds them (the stem and the first depthwise conv).

The model's own preprocessing (from the ONNX metadata) prepares the calibration images, and
the output gets the same metadata plus how it was quantized, so ``effnet predict --engine
onnxruntime --weights model.int8.onnx`` works as for the float file.

Modules, in the order a run uses them: ``recipe`` (settings and constants), ``graph`` (read
and prepare the float graph, find its layers), ``calibration`` (images, activation ranges),
``sessions`` (onnxruntime sessions on files or in-memory graphs, batched runs), ``scales``
(weight scales, bias correction, the ``quantize_static`` call), ``sensitivity`` (per-layer
error, which layers stay float), ``report`` (fp32 vs int8), ``pipeline`` (``quantize()``, the
steps in order). ``openvino`` is the other engine's int8 (NNCF on the same calibration images).
"""
