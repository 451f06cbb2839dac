"""Our own files (``effnet convert``/``train`` safetensors): timm's names, and a header that
says everything else, so they are recognised by their metadata, never by their tensor names."""

from __future__ import annotations

from ...models.spec import Padding
from .base import Source
from .timm import from_timm

SOURCE = Source("effnet", markers=(), classifier="classifier.weight", convert=from_timm,
                padding=Padding.SYMMETRIC, bn_eps=1e-5, convertible=False)
