"""What every weights source (ecosystem) says about its checkpoints, in one small object.

Kept apart from the registry in ``__init__.py`` so that each source module imports only this
and never the package that lists it. Nothing here imports torch: choosing a source (``effnet
convert --help``, detection) stays light; converters only call tensor methods.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple

from ...data.transforms import Preprocessing
from ...models.spec import NetworkPlan, Padding

if TYPE_CHECKING:
    import torch

    from ..entry import WeightsEntry

StateDict = dict[str, "torch.Tensor"]
Converter = Callable[[Mapping[str, "torch.Tensor"], NetworkPlan], StateDict]
#: (path, arch, tensors, file metadata) -> the entry describing a file no registry entry knows
FileDescriber = Callable[[Path, str, Mapping[str, "torch.Tensor"], Mapping[str, str]], "WeightsEntry"]


class FileSettings(NamedTuple):
    """What a bare file (no header, no registry entry) of a source was trained and evaluated with."""

    padding: Padding
    bn_eps: float
    preprocessing: Preprocessing


@dataclass(frozen=True)
class Source:
    """One ecosystem's checkpoint layout: how to recognise it, map it to ours, and use a bare
    file of it that no registry entry describes."""

    name: str
    #: tensor names only this layout has; a file holding one of them is of this source
    markers: tuple[str, ...]
    #: the classifier's weight tensor and the axis that counts the classes
    classifier: str
    #: its names -> ours, placed by the network plan; unknown keys are kept for the strict check
    convert: Converter
    #: what a bare file of this source was trained with (registry entries say better when they can)
    padding: Padding
    bn_eps: float
    classifier_axis: int = 0
    #: a file of this source carries its own preprocessing: build its entry from the file
    describe_file: FileDescriber | None = None
    #: offered by ``effnet convert --from`` (our own files need no conversion)
    convertible: bool = True
    #: where a bare file's settings depend on the variant (PaddleClas's B0-small pads otherwise,
    #: MindSpore's B5-B7 use another eps) or the ecosystem has its own eval recipe: them, by plan
    settings_for: Callable[[NetworkPlan], FileSettings] | None = None

    def detects(self, state: Mapping[str, object]) -> bool:
        return any(marker in state for marker in self.markers)

    def bare_settings(self, plan: NetworkPlan) -> FileSettings:
        """What a bare file of this source for ``plan`` was trained with: ``settings_for`` when
        the source has it, else ``padding``, ``bn_eps`` and the usual ImageNet recipe at the
        plan's eval size."""
        if self.settings_for is not None:
            return self.settings_for(plan)
        return FileSettings(self.padding, self.bn_eps, Preprocessing(size=plan.eval_resolution))

    def classifier_rows(self, state: Mapping[str, "torch.Tensor"]) -> int | None:
        """Number of classes of a checkpoint in this layout, or None without a classifier."""
        weight = state.get(self.classifier)
        return None if weight is None else int(weight.shape[self.classifier_axis])


def rename_by_prefix(state: Mapping[str, "torch.Tensor"], prefixes: Mapping[str, str]) -> StateDict:
    """Rename ``prefix.leaf`` keys through a module-prefix table; unknown keys are kept as-is
    so that the strict check reports them."""
    out: StateDict = {}
    for key, tensor in state.items():
        module, _, leaf = key.rpartition(".")
        out[f"{prefixes[module]}.{leaf}" if module in prefixes else key] = tensor
    return out
