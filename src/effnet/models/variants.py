"""Every named variant, one line each: family, width, depth, resolution, dropout.

Coefficients: V1 from Tan & Le 2019 (B0-B7) and tensorflow/tpu ``efficientnet_builder.py``
(B8, L2); Lite from ``efficientnet_lite_builder.py``; V2 from google/automl
``effnetv2_configs.py`` (train size, eval size, dropout).
"""

from __future__ import annotations

from difflib import SequenceMatcher
from heapq import nlargest

from ..errors import UsageError
from .spec import Family, NetworkPlan, Variant, plan_network
from .tables import V1_BASE, V2_BASE, V2_L, V2_M, V2_S, V2_XL

#: EfficientNet (Tan & Le, ICML 2019)
V1 = Family("efficientnet", V1_BASE, activation="silu")
#: EfficientNet-B0 without squeeze-excitation (PaddleClas EfficientNetB0_small)
V1_NO_SE = Family("efficientnet_small", V1_BASE, activation="silu", use_se=False)
#: EfficientNet-Lite (TensorFlow TPU repository, 2020)
LITE = Family(
    "efficientnet_lite", V1_BASE, activation="relu6", use_se=False, fixed_stem_head=True,
    unscaled_depth_stages=(0, -1),
)
#: EfficientNetV2 (Tan & Le, ICML 2021)
V2 = Family("efficientnetv2", V2_BASE, activation="silu", round_limit=0.0)

VARIANTS: dict[str, Variant] = {
    "efficientnet_b0": Variant(V1, width=1.0, depth=1.0, resolution=224, dropout=0.2),
    "efficientnet_b1": Variant(V1, width=1.0, depth=1.1, resolution=240, dropout=0.2),
    "efficientnet_b2": Variant(V1, width=1.1, depth=1.2, resolution=260, dropout=0.3),
    "efficientnet_b3": Variant(V1, width=1.2, depth=1.4, resolution=300, dropout=0.3),
    "efficientnet_b4": Variant(V1, width=1.4, depth=1.8, resolution=380, dropout=0.4),
    "efficientnet_b5": Variant(V1, width=1.6, depth=2.2, resolution=456, dropout=0.4),
    "efficientnet_b6": Variant(V1, width=1.8, depth=2.6, resolution=528, dropout=0.5),
    "efficientnet_b7": Variant(V1, width=2.0, depth=3.1, resolution=600, dropout=0.5),
    "efficientnet_b8": Variant(V1, width=2.2, depth=3.6, resolution=672, dropout=0.5),
    "efficientnet_l2": Variant(V1, width=4.3, depth=5.3, resolution=800, dropout=0.5),
    "efficientnet_b0_small": Variant(V1_NO_SE, width=1.0, depth=1.0, resolution=224, dropout=0.2),
    "efficientnet_lite0": Variant(LITE, width=1.0, depth=1.0, resolution=224, dropout=0.2),
    "efficientnet_lite1": Variant(LITE, width=1.0, depth=1.1, resolution=240, dropout=0.2),
    "efficientnet_lite2": Variant(LITE, width=1.1, depth=1.2, resolution=260, dropout=0.3),
    "efficientnet_lite3": Variant(LITE, width=1.2, depth=1.4, resolution=280, dropout=0.3),
    "efficientnet_lite4": Variant(LITE, width=1.4, depth=1.8, resolution=300, dropout=0.3),
    "efficientnetv2_b0": Variant(V2, width=1.0, depth=1.0, resolution=192, eval_resolution=224, dropout=0.2),
    "efficientnetv2_b1": Variant(V2, width=1.0, depth=1.1, resolution=192, eval_resolution=240, dropout=0.2),
    "efficientnetv2_b2": Variant(V2, width=1.1, depth=1.2, resolution=208, eval_resolution=260, dropout=0.3),
    "efficientnetv2_b3": Variant(V2, width=1.2, depth=1.4, resolution=240, eval_resolution=300, dropout=0.3),
    "efficientnetv2_s": Variant(V2, 1.0, 1.0, table=V2_S, resolution=300, eval_resolution=384, dropout=0.2),
    "efficientnetv2_m": Variant(V2, 1.0, 1.0, table=V2_M, resolution=384, eval_resolution=480, dropout=0.3),
    "efficientnetv2_l": Variant(V2, 1.0, 1.0, table=V2_L, resolution=384, eval_resolution=480, dropout=0.4),
    "efficientnetv2_xl": Variant(V2, 1.0, 1.0, table=V2_XL, resolution=384, eval_resolution=512, dropout=0.4),
}


def short_name(name: str) -> str:
    """``efficientnet_b0`` -> ``b0``, ``efficientnetv2_s`` -> ``v2_s`` (tables, plots, aliases)."""
    return name.replace("efficientnetv2_", "v2_").replace("efficientnet_", "")


def _short_names() -> dict[str, str]:
    """``b0``, ``lite0``, ``v2_s``, ``efficientnet-b0`` all reach their canonical name."""
    aliases: dict[str, str] = {}
    for name in VARIANTS:
        short = short_name(name)
        aliases[short] = name
        aliases[name.replace("_", "-")] = name
        aliases[short.replace("_", "-")] = name
    return aliases


ALIASES = _short_names()


class UnknownModelError(UsageError):
    """An unknown variant name; the message lists what exists."""


def canonical_name(name: str) -> str:
    key = name.strip().lower()
    if key in VARIANTS:
        return key
    if key in ALIASES:
        return ALIASES[key]
    close = suggestions(key)
    hint = f" Did you mean {', '.join(close)}?" if close else ""
    raise UnknownModelError(f"unknown model '{name}'.{hint} Valid models: {', '.join(VARIANTS)}")


#: difflib ratio from which a variant is suggested for an unknown name
SUGGEST_ABOVE = 0.4


def suggestions(name: str, limit: int = 3) -> list[str]:
    """Up to ``limit`` canonical names close to ``name``, each once, closest first.

    Names are compared in their short form (``b99`` with ``b8``, ``v2b0`` with ``v2_b0``): the
    shared ``efficientnet_`` prefix would make every name look alike, and short names are too
    short for difflib's usual 0.6 cutoff (``b99`` and ``b8`` score 0.4), hence ``SUGGEST_ABOVE``.
    """
    key = short_name(name.strip().lower().replace("-", "_"))
    scored = ((SequenceMatcher(None, key, short_name(variant)).ratio(), variant) for variant in VARIANTS)
    return [variant for _, variant in nlargest(limit, (pair for pair in scored if pair[0] >= SUGGEST_ABOVE))]


def get_variant(name: str) -> tuple[str, Variant]:
    canonical = canonical_name(name)
    return canonical, VARIANTS[canonical]


def list_models() -> list[str]:
    """Every variant's canonical name, in family order (B0...L2, B0-small, Lite0-4, V2)."""
    return list(VARIANTS)


def resolve(name: str, **overrides: object) -> NetworkPlan:
    """``resolve("efficientnet_b3", num_classes=10)`` -> the scaled plan for that variant."""
    canonical, variant = get_variant(name)
    return plan_network(canonical, variant, **overrides)  # type: ignore[arg-type]
