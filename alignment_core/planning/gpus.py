"""The GPUs the planner knows: usable memory (as torch reports it) and bf16 support."""

from __future__ import annotations

import re
from dataclasses import dataclass

GIB = 1024**3


@dataclass(frozen=True)
class GpuInfo:
    name: str
    memory_bytes: int
    bf16: bool = True

    @property
    def memory_gib(self) -> float:
        return self.memory_bytes / GIB


class UnknownGpu(ValueError):
    """A GPU name the planner does not know; the message lists the known ones."""


# total_memory as torch.cuda.get_device_properties reports it (a little below the marketing figure).
KNOWN_GPUS: dict[str, GpuInfo] = {
    gpu.name: gpu
    for gpu in (
        GpuInfo("H200-141GB", int(139.8 * GIB)),
        GpuInfo("H100-80GB", int(79.2 * GIB)),
        GpuInfo("A100-80GB", int(79.2 * GIB)),
        GpuInfo("A100-40GB", int(39.4 * GIB)),
        GpuInfo("L40S-48GB", int(44.4 * GIB)),
        GpuInfo("A10G-24GB", int(22.0 * GIB)),
        GpuInfo("L4-24GB", int(22.0 * GIB)),
        GpuInfo("RTX4090-24GB", int(23.6 * GIB)),
        GpuInfo("V100-32GB", int(31.7 * GIB), bf16=False),
        GpuInfo("T4-16GB", int(14.6 * GIB), bf16=False),
    )
}

_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(GB|GIB|G)\s*$", re.IGNORECASE)


def gpu_info(gpu: GpuInfo | str) -> GpuInfo:
    """A known GPU by name (case-insensitive), or a generic bf16 GPU from a size such as '40GiB' / '24GB'."""
    if isinstance(gpu, GpuInfo):
        return gpu
    for name, info in KNOWN_GPUS.items():
        if name.lower() == gpu.lower() or name.split("-")[0].lower() == gpu.lower():
            return info
    size = _SIZE.match(gpu)
    if size:
        amount, unit = float(size.group(1)), size.group(2).upper()
        memory = amount * GIB if unit in ("GIB", "G") else amount * 1e9
        return GpuInfo(f"GPU-{size.group(1)}{unit}", int(memory))
    raise UnknownGpu(f"unknown GPU '{gpu}': use one of {', '.join(KNOWN_GPUS)} or a size such as '40GiB'")
