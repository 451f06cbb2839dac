"""Stage tables exactly as the papers (and their reference code) write them.

Each row is one stage before scaling: block kind, repeats, kernel, stride, expansion ratio,
output channels and squeeze-excitation ratio (relative to the block's input channels).
A table also fixes the stem and head widths that the width multiplier later scales.

Sources:
- V1: Tan & Le 2019, Table 1 (tensorflow/tpu ``efficientnet_builder.py``), which the
  Lite models reuse without SE (``efficientnet_lite_builder.py``).
- V2: Tan & Le 2021, Table 4 (V2-S) and google/automl ``effnetv2_configs.py`` for the base
  (B0-B3), M, L and XL tables.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

BlockKind = Literal["depthwise", "mbconv", "fused"]


@dataclass(frozen=True)
class Stage:
    """One row of a stage table, before width/depth scaling."""

    kind: BlockKind
    repeats: int
    kernel: int
    stride: int
    expand_ratio: int
    out_channels: int
    se_ratio: float = 0.0


@dataclass(frozen=True)
class StageTable:
    """The body of a network: stem width, stage rows, head width (all unscaled)."""

    stem_channels: int
    stages: tuple[Stage, ...]
    head_channels: int = 1280


V1_BASE = StageTable(
    stem_channels=32,
    stages=(
        Stage("depthwise", repeats=1, kernel=3, stride=1, expand_ratio=1, out_channels=16, se_ratio=0.25),
        Stage("mbconv", repeats=2, kernel=3, stride=2, expand_ratio=6, out_channels=24, se_ratio=0.25),
        Stage("mbconv", repeats=2, kernel=5, stride=2, expand_ratio=6, out_channels=40, se_ratio=0.25),
        Stage("mbconv", repeats=3, kernel=3, stride=2, expand_ratio=6, out_channels=80, se_ratio=0.25),
        Stage("mbconv", repeats=3, kernel=5, stride=1, expand_ratio=6, out_channels=112, se_ratio=0.25),
        Stage("mbconv", repeats=4, kernel=5, stride=2, expand_ratio=6, out_channels=192, se_ratio=0.25),
        Stage("mbconv", repeats=1, kernel=3, stride=1, expand_ratio=6, out_channels=320, se_ratio=0.25),
    ),
)

V2_BASE = StageTable(
    stem_channels=32,
    stages=(
        Stage("fused", repeats=1, kernel=3, stride=1, expand_ratio=1, out_channels=16),
        Stage("fused", repeats=2, kernel=3, stride=2, expand_ratio=4, out_channels=32),
        Stage("fused", repeats=2, kernel=3, stride=2, expand_ratio=4, out_channels=48),
        Stage("mbconv", repeats=3, kernel=3, stride=2, expand_ratio=4, out_channels=96, se_ratio=0.25),
        Stage("mbconv", repeats=5, kernel=3, stride=1, expand_ratio=6, out_channels=112, se_ratio=0.25),
        Stage("mbconv", repeats=8, kernel=3, stride=2, expand_ratio=6, out_channels=192, se_ratio=0.25),
    ),
)

V2_S = StageTable(
    stem_channels=24,
    stages=(
        Stage("fused", repeats=2, kernel=3, stride=1, expand_ratio=1, out_channels=24),
        Stage("fused", repeats=4, kernel=3, stride=2, expand_ratio=4, out_channels=48),
        Stage("fused", repeats=4, kernel=3, stride=2, expand_ratio=4, out_channels=64),
        Stage("mbconv", repeats=6, kernel=3, stride=2, expand_ratio=4, out_channels=128, se_ratio=0.25),
        Stage("mbconv", repeats=9, kernel=3, stride=1, expand_ratio=6, out_channels=160, se_ratio=0.25),
        Stage("mbconv", repeats=15, kernel=3, stride=2, expand_ratio=6, out_channels=256, se_ratio=0.25),
    ),
)

V2_M = StageTable(
    stem_channels=24,
    stages=(
        Stage("fused", repeats=3, kernel=3, stride=1, expand_ratio=1, out_channels=24),
        Stage("fused", repeats=5, kernel=3, stride=2, expand_ratio=4, out_channels=48),
        Stage("fused", repeats=5, kernel=3, stride=2, expand_ratio=4, out_channels=80),
        Stage("mbconv", repeats=7, kernel=3, stride=2, expand_ratio=4, out_channels=160, se_ratio=0.25),
        Stage("mbconv", repeats=14, kernel=3, stride=1, expand_ratio=6, out_channels=176, se_ratio=0.25),
        Stage("mbconv", repeats=18, kernel=3, stride=2, expand_ratio=6, out_channels=304, se_ratio=0.25),
        Stage("mbconv", repeats=5, kernel=3, stride=1, expand_ratio=6, out_channels=512, se_ratio=0.25),
    ),
)

V2_L = StageTable(
    stem_channels=32,
    stages=(
        Stage("fused", repeats=4, kernel=3, stride=1, expand_ratio=1, out_channels=32),
        Stage("fused", repeats=7, kernel=3, stride=2, expand_ratio=4, out_channels=64),
        Stage("fused", repeats=7, kernel=3, stride=2, expand_ratio=4, out_channels=96),
        Stage("mbconv", repeats=10, kernel=3, stride=2, expand_ratio=4, out_channels=192, se_ratio=0.25),
        Stage("mbconv", repeats=19, kernel=3, stride=1, expand_ratio=6, out_channels=224, se_ratio=0.25),
        Stage("mbconv", repeats=25, kernel=3, stride=2, expand_ratio=6, out_channels=384, se_ratio=0.25),
        Stage("mbconv", repeats=7, kernel=3, stride=1, expand_ratio=6, out_channels=640, se_ratio=0.25),
    ),
)

V2_XL = StageTable(
    stem_channels=32,
    stages=(
        Stage("fused", repeats=4, kernel=3, stride=1, expand_ratio=1, out_channels=32),
        Stage("fused", repeats=8, kernel=3, stride=2, expand_ratio=4, out_channels=64),
        Stage("fused", repeats=8, kernel=3, stride=2, expand_ratio=4, out_channels=96),
        Stage("mbconv", repeats=16, kernel=3, stride=2, expand_ratio=4, out_channels=192, se_ratio=0.25),
        Stage("mbconv", repeats=24, kernel=3, stride=1, expand_ratio=6, out_channels=256, se_ratio=0.25),
        Stage("mbconv", repeats=32, kernel=3, stride=2, expand_ratio=6, out_channels=512, se_ratio=0.25),
        Stage("mbconv", repeats=8, kernel=3, stride=1, expand_ratio=6, out_channels=640, se_ratio=0.25),
    ),
)
