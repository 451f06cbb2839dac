"""MindSpore (``.ckpt``, read by ``weights/mindspore_ckpt.py``): mindcv's EfficientNet-B.

mindcv's model (``mindcv/models/efficientnet.py``, a port of torchvision's) names the stem
conv ``features.0`` and its BatchNorm ``features.1``, each block
``features.<3 + stage>.<i>.block.<k>`` where conv, BatchNorm and Swish each take a slot ``k``
(the projection has no Swish) and SE one slot (``conv_reduce``/``conv_expand``), the head conv
and BatchNorm ``features.<3 + stages>``/``<4 + stages>``, the classifier ``mlp_head``. BatchNorm
tensors are ``gamma``/``beta``/``moving_mean``/``moving_variance``.

mindcv saves its files from the training network, so they also hold optimizer slots named
``<slot>.<parameter>`` after a parameter of the same file (``moments.features.0.weight``) and
dot-free counters (``learning_rate``, ``global_step``); the converter sets those apart, and
every other tensor must be placed.

Padding: MindSpore's ``pad_mode="same"``, TF "SAME" for each input's actual size (our
``TF_SAME``). BatchNorm: MindSpore's default eps 1e-5 below width 1.6 and 1e-3 from B5 (width
1.6) up, as torchvision builds them. MindVision's older EfficientNet files are not mapped
(``docs/weights.md`` says why).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

from ...data.transforms import Preprocessing
from ...errors import WeightsError
from ...models.spec import ConvLayer, NetworkPlan, Padding
from .base import FileSettings, Source, StateDict

if TYPE_CHECKING:
    import torch

#: their leaf names -> ours (conv and dense weights and biases keep theirs)
LEAVES = {"weight": "weight", "bias": "bias", "gamma": "weight", "beta": "bias", "moving_mean": "running_mean",
          "moving_variance": "running_var"}
#: slots of ``block`` a conv takes: conv, BatchNorm, Swish
CONV_SLOTS = 3
#: mindcv builds with eps 1e-3 (and momentum 0.99) from this width up, MindSpore's default 1e-5 below
WIDE = 1.6


def split_training_state(state: Mapping[str, torch.Tensor]) -> tuple[StateDict, StateDict]:
    """(model tensors, training state). Training state is what a training network adds to the
    model's parameters: per-parameter optimizer slots and EMA shadows, named ``<slot>.<name of
    a tensor in the file>``, and dot-free scalars (``learning_rate``, ``global_step``...)."""
    model: StateDict = {}
    training: StateDict = {}
    for key, tensor in state.items():
        if "." not in key or key.partition(".")[2] in state:
            training[key] = tensor
        else:
            model[key] = tensor
    return model, training


def key_map(plan: NetworkPlan) -> dict[str, str]:
    """Their module prefixes (``features.4.0.block.3``) -> ours (``blocks.1.0.conv_dw``)."""
    missing = [f"blocks.{b.stage}.{b.index}" for b in plan.blocks if b.kind == "fused" or not b.se_channels]
    if missing:
        raise WeightsError(f"mindcv's EfficientNet-B has MBConv blocks with SE; {plan.name} has other blocks in "
                           f"{', '.join(missing[:3])}{' ...' if len(missing) > 3 else ''}")
    head = 3 + plan.num_stages
    mapping = {"features.0": plan.stem.conv, "features.1": plan.stem.norm, f"features.{head}": plan.head.conv,
               f"features.{head + 1}": plan.head.norm, "mlp_head": "classifier"}
    for block in plan.blocks:
        theirs, ours = f"features.{3 + block.stage}.{block.index}.block", f"blocks.{block.stage}.{block.index}"
        slot = 0
        for layer in block.layers():
            if isinstance(layer, ConvLayer):
                mapping[f"{theirs}.{slot}"] = f"{ours}.{layer.conv}"
                mapping[f"{theirs}.{slot + 1}"] = f"{ours}.{layer.norm}"
                slot += CONV_SLOTS
            else:
                mapping[f"{theirs}.{slot}.conv_reduce"] = f"{ours}.{layer.name}.conv_reduce"
                mapping[f"{theirs}.{slot}.conv_expand"] = f"{ours}.{layer.name}.conv_expand"
                slot += 1
    return mapping


def from_mindspore(state: Mapping[str, torch.Tensor], plan: NetworkPlan) -> StateDict:
    """mindcv tensors -> ours, training state dropped. Unknown keys are kept as they are, so
    that the strict check reports them."""
    model, _ = split_training_state(state)
    prefixes = key_map(plan)
    out: StateDict = {}
    for key, tensor in model.items():
        module, _, leaf = key.rpartition(".")
        out[f"{prefixes[module]}.{LEAVES[leaf]}" if module in prefixes and leaf in LEAVES else key] = tensor
    return out


def preprocessing(size: int) -> Preprocessing:
    """mindcv's eval transform (``transforms_imagenet_eval`` with its configs' ``crop_pct: 0.875``
    and ``interpolation: bicubic``): the shorter side resized to ``floor(size / 0.875)``, the
    centre ``size`` cropped, ImageNet mean/std."""
    return Preprocessing(size=size, crop_fraction=0.875, crop_mode="resize_then_center_crop",
                         interpolation="bicubic")


def settings_for(plan: NetworkPlan) -> FileSettings:
    return FileSettings(Padding.TF_SAME, 1e-3 if plan.width >= WIDE else 1e-5, preprocessing(plan.eval_resolution))


SOURCE = Source("mindspore", markers=("features.0.weight",), classifier="mlp_head.weight", convert=from_mindspore,
                padding=Padding.TF_SAME, bn_eps=1e-5, settings_for=settings_for)
