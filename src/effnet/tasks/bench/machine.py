"""The machine a benchmark ran on: what decides its numbers, for the header and the JSON.

CPU model, usable cores, GPU, library versions and the memory allocator (``effnet._malloc``:
glibc's defaults can double eager latency at batch 16). ``benchmarks/`` scripts print the
same header, so their tables say where they were measured too.
"""

from __future__ import annotations

import datetime
import os
import platform
from importlib.metadata import PackageNotFoundError, version
from typing import Any

from ..._malloc import allocator


def cpu_model() -> str:
    """The CPU's marketing name where Linux says it, else what Python knows."""
    try:
        with open("/proc/cpuinfo") as handle:
            for line in handle:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def package_version(package: str) -> str:
    try:
        return version(package)
    except PackageNotFoundError:
        return "not installed"


def machine_info() -> dict[str, Any]:
    """The probe: usable cores are this process's CPU affinity (a container's share), not the host's."""
    import torch

    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return {
        "date": datetime.date.today().isoformat(),
        "cpu": cpu_model(),
        "cores": usable,
        "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "torch": torch.__version__,
        "onnxruntime": package_version("onnxruntime"),
        "openvino": package_version("openvino"),
        "numpy": package_version("numpy"),
        "python": platform.python_version(),
        "allocator": allocator(),
        "torch_threads_default": torch.get_num_threads(),
    }


def header_lines(machine: dict[str, Any]) -> list[str]:
    gpu = machine["gpu"] or "none"
    return [
        f"machine: {machine['cpu']}, {machine['cores']} cores, GPU: {gpu}; {machine['date']}",
        f"libraries: torch {machine['torch']}, onnxruntime {machine['onnxruntime']}, "
        f"openvino {machine.get('openvino')}, numpy {machine['numpy']}, python {machine['python']}",
        f"allocator: {machine['allocator']}",
    ]
