"""GPU memory planning: estimate a job's per-GPU memory and recommend a set-up that fits."""

from alignment_core.planning.gpus import KNOWN_GPUS, GpuInfo, UnknownGpu, gpu_info
from alignment_core.planning.memory import MemoryEstimate, estimate_memory
from alignment_core.planning.model_shape import ModelConfigUnavailable, ModelShape, read_model_shape
from alignment_core.planning.recommend import ModelDoesNotFit, Recommendation, check_fits, recommend

__all__ = [
    "KNOWN_GPUS",
    "GpuInfo",
    "MemoryEstimate",
    "ModelConfigUnavailable",
    "ModelDoesNotFit",
    "ModelShape",
    "Recommendation",
    "UnknownGpu",
    "check_fits",
    "estimate_memory",
    "gpu_info",
    "read_model_shape",
    "recommend",
]
