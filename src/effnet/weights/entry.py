"""``WeightsEntry``: everything a checkpoint needs to be used correctly travels with it.

An entry says which architecture the tensors fit, where they come from (file shipped in a
package, or URL), their checksum, the padding convention and BatchNorm epsilon they were
evaluated with, the preprocessing they expect, their labels and the accuracy their
publisher reported (and where). Tasks read all of it from here; nothing is guessed from a
model name. (The entries themselves are rows in ``catalog.py``.)

Checksums: where the full sha256 of a file is published it is stored whole; otherwise the
publisher only put a sha256 prefix in the file name (torch.hub's convention: timm,
torchvision, lukemelas) and that prefix is what is stored and verified.
"""

from __future__ import annotations

import hashlib
import importlib.util
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..data.transforms import Preprocessing
from ..errors import WeightsError
from ..models.spec import Padding
from .cache import cached_weights


@dataclass(frozen=True)
class WeightsEntry:
    name: str
    arch: str
    #: the layout of the tensors: a name in ``weights.sources.SOURCES``
    source: str
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
    #: Parameter count the publisher states for these weights (a cross-check of the arch).
    num_params: int | None = None
    extra: dict[str, Any] = field(default_factory=dict, compare=False)

    @property
    def tag(self) -> str:
        return self.name.split(".", 1)[1] if "." in self.name else self.name

    @property
    def filename(self) -> str | None:
        """The file's own name (the last part of its URL or path)."""
        where = self.url or self.file
        return where.rsplit("/", 1)[-1] if where else None

    @property
    def extra_training_data(self) -> bool:
        """Pretrained on more than ImageNet-1k (JFT-300M, ImageNet-21k)."""
        return "jft" in self.tag or "in21k" in self.tag

    def locate(self) -> Path | None:
        """The local file: shipped in an installed package (``package:pkg/rel``), a path,
        or the download cache for URL entries. ``None`` when it is not on this machine."""
        if self.file and self.file.startswith("package:"):
            package, _, relative = self.file[len("package:") :].partition("/")
            spec = importlib.util.find_spec(package)
            if spec is None or not spec.submodule_search_locations:
                return None
            return Path(next(iter(spec.submodule_search_locations))) / relative
        if self.file:
            return Path(self.file)
        if self.url and self.filename:
            return cached_weights(self.filename)
        return None

    def available(self) -> bool:
        path = self.locate()
        return path is not None and path.is_file()


def sha256_of(path: Path, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def checksum_matches(actual: str, expected: str) -> bool:
    """A full sha256 must be equal; a published prefix (``3dd342df``) must start it."""
    return actual.lower().startswith(expected.lower())


def verify_checksum(path: Path, expected: str | None) -> None:
    if not expected:
        return
    actual = sha256_of(path)
    if not checksum_matches(actual, expected):
        what = "sha256" if len(expected) == 64 else f"sha256 prefix ({len(expected)} hex digits, as published)"
        raise WeightsError(
            f"{path}: checksum mismatch: expected {what} {expected}, got {actual[: max(len(expected), 12)]}; "
            "the file is corrupt, truncated or not these weights"
        )
