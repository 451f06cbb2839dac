"""How much work a variant does: multiply-adds, counted rather than derived by hand.

Parameters need no module (``NetworkPlan.num_params()`` sums them from the block anatomy in
pure Python); multiply-adds depend on every feature map's size, so they are counted by running
the real module once on PyTorch's ``meta`` device (no memory, no arithmetic) under
``torch.utils.flop_counter.FlopCounterMode``: even L2 at 800x800 takes about a second. That
counter reports 2 FLOPs per multiply-add for convolutions and matrix products and ignores
elementwise ops (activations, SE scaling, residual adds, BatchNorm); halving it gives the
papers' convention, multiply-adds of the conv and FC layers.
"""

from __future__ import annotations

from .spec import NetworkPlan


def count_macs(plan: NetworkPlan, size: int | None = None) -> int:
    """Multiply-adds of one image through ``plan`` at ``size`` (default: its eval resolution)."""
    # torch only here: the plan and its parameter count stay importable without it
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from .network import EfficientNet

    class _Uncounted(EfficientNet):
        def _init_weights(self) -> None:
            """Meta tensors hold no values; random init there only costs time (~2 s for B7)."""

    size = size or plan.eval_resolution
    with torch.device("meta"):
        model = _Uncounted(plan).eval()
        image = torch.empty(1, plan.in_chans, size, size)
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        model(image)
    return counter.get_total_flops() // 2
