"""The machine a benchmark ran on: what decides its numbers, for the header and the JSON.

CPU model and the instruction sets that matter (AVX2, AVX512, VNNI, BF16, AMX), usable cores, GPU, library versions and the memory allocator (``effnet._malloc``:
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


#: /proc/cpuinfo flag -> name: the instruction sets that change CPU numbers most (onnxruntime's
#: int8 kernels saturate without VNNI; oneDNN's bf16 is native only with AVX512-BF16 or AMX)
CPU_FEATURES = {"avx2": "AVX2", "avx512f": "AVX512", "avx512_vnni": "VNNI", "avx_vnni": "AVX-VNNI",
                "avx512_bf16": "BF16", "amx_tile": "AMX"}


def cpu_features() -> str:
    """``AVX2 AVX512 VNNI BF16``-style: the features of ``CPU_FEATURES`` this CPU has, or
    ``unknown`` off Linux."""
    try:
        with open("/proc/cpuinfo") as handle:
            flags = next((line.split(":", 1)[1].split() for line in handle if line.startswith("flags")), None)
    except OSError:
        flags = None
    if flags is None:
        return "unknown"
    return " ".join(name for flag, name in CPU_FEATURES.items() if flag in flags) or "no AVX2"


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
        "cpu_features": cpu_features(),
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


def features(machine: dict[str, Any]) -> str:
    """`` (AVX2 AVX512 VNNI)`` after the CPU's name; nothing for results recorded before it was."""
    return f" ({machine['cpu_features']})" if machine.get("cpu_features") else ""


def header_lines(machine: dict[str, Any]) -> list[str]:
    gpu = machine["gpu"] or "none"
    return [
        f"machine: {machine['cpu']}{features(machine)}, {machine['cores']} cores, GPU: {gpu}; {machine['date']}",
        f"libraries: torch {machine['torch']}, onnxruntime {machine['onnxruntime']}, "
        f"openvino {machine.get('openvino')}, numpy {machine['numpy']}, python {machine['python']}",
        f"allocator: {machine['allocator']}",
    ]
