"""GPU memory planning: estimate a job's per-GPU memory and recommend a set-up that fits."""

from alignment_core.planning.gpus import KNOWN_GPUS, GpuInfo, UnknownGpu, gpu_info
from alignment_core.planning.memory import MemoryEstimate, estimate_memory
from alignment_core.planning.model_shape import ModelConfigUnavailable, ModelShape, read_model_shape
from alignment_core.planning.recommend import ModelDoesNotFit, Recommendation, check_fits, recommend
from alignment_core.planning.shape_source import (
    IncompleteShape,
    ShapeOverrides,
    parse_param_count,
    resolve_model_shape,
)

__all__ = [
    "KNOWN_GPUS",
    "GpuInfo",
    "IncompleteShape",
    "MemoryEstimate",
    "ModelConfigUnavailable",
    "ModelDoesNotFit",
    "ModelShape",
    "Recommendation",
    "ShapeOverrides",
    "UnknownGpu",
    "check_fits",
    "estimate_memory",
    "gpu_info",
    "parse_param_count",
    "read_model_shape",
    "recommend",
    "resolve_model_shape",
]
