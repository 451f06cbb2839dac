"""Errors users see as one line (``effnet: error: ...``), each with its exit code.

A leaf module every room may import: it imports nothing of ours.
"""

from __future__ import annotations


class EffnetError(Exception):
    """A problem with the user's input or environment, not a bug: no traceback is shown."""

    exit_code = 1
    #: how the one line starts after ``effnet: `` (a stop the user asked for is no error)
    label = "error: "


class UsageError(EffnetError, ValueError):
    """Wrong arguments (unknown model, bad option value): exit code 2, like argparse."""

    exit_code = 2


class WeightsError(EffnetError, ValueError):
    """Unusable weights (missing file, checksum, corrupt or crafted file, bad metadata)."""


class UnknownWeightsError(WeightsError, UsageError):
    """A weights name or tag no entry has: a usage error (exit 2), like an unknown model name."""


class WrongArchitectureError(WeightsError, UsageError):
    """Weights for another architecture than the one asked for, however they arrive (an entry,
    a safetensors or ONNX file that names its model, tensors that are exactly another
    variant's): the same mistake, so the same usage error (exit 2)."""


class WeightsMismatchError(WeightsError):
    """Tensors that do not fit the architecture: the message lists the differences."""
