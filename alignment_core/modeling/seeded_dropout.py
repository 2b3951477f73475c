"""Dropout whose mask is a hash of (key, element index): the same key gives the same mask, on any stream.

Activation checkpointing must recompute a layer with the dropout mask of its first forward. torch's checkpoint
does that by stashing and restoring the RNG state, which CUDA graph capture forbids. Here the mask is a pure
function of a per-forward key (drawn from torch's CPU generator, so seeding and a resumed trainer's restored RNG
state reproduce it) and a per-site salt, so a forward graph and its recompute draw the same mask, and the
backward regenerates it instead of saving it. Keep probability 1 - p, kept values scaled by 1 / (1 - p), as
nn.Dropout.
"""

from __future__ import annotations

import logging
from typing import Any

import torch
from torch import nn

logger = logging.getLogger(__name__)

_M32 = 0xFFFFFFFF
_MIX = 0x45D9F3B  # Mueller's 32-bit integer hash constant; below 2**27, so products stay under 2**59 in int64
_KEY_MUL = 0x9E3779B1  # golden-ratio multiplier spreading consecutive keys; key < 2**31 keeps key * it < 2**63
KEY_LIMIT = 2**31 - 1


def _mix(x: torch.Tensor) -> torch.Tensor:
    x = (((x >> 16) ^ x) * _MIX) & _M32
    x = (((x >> 16) ^ x) * _MIX) & _M32
    return (x >> 16) ^ x


def _apply(x: torch.Tensor, key: torch.Tensor, salt: torch.Tensor, p: float) -> torch.Tensor:
    """x with the mask of (key, salt) applied and the kept values scaled, in x's dtype."""
    seed = (key * _KEY_MUL + salt) & _M32
    k1 = _mix(seed)
    k2 = _mix(k1 ^ 0x5BD1E995)
    # An odd multiplier drawn from the key: masks of different keys are not shifts or xor-permutations of each other.
    odd = (_mix(k2 ^ 0x27D4EB2F) & 0x7FFFFFF) | 1
    index = torch.arange(x.numel(), device=x.device, dtype=torch.int64).view(x.shape)
    h = _mix(((index ^ k1) * odd) & _M32)
    h = _mix(h ^ k2)
    keep = h >= int(round(p * 2**32))
    return torch.where(keep, x * (1.0 / (1.0 - p)), torch.zeros((), dtype=x.dtype, device=x.device))


def _triton_apply(x: torch.Tensor, key: torch.Tensor, salt: torch.Tensor, p: float) -> torch.Tensor:
    """`_apply` as one Triton kernel, the same integer arithmetic in uint32 (which wraps where `_apply` masks), so
    the masks are identical. A plain Triton kernel rather than torch.compile: a recompilation inside a CUDA graph
    capture would invalidate the capture (seen once per process on an H100, bench/gpu graph_check)."""
    from alignment_core.modeling.seeded_dropout_kernel import BLOCK, seeded_dropout_kernel

    out = torch.empty_like(x)
    n = x.numel()
    seeded_dropout_kernel[((n + BLOCK - 1) // BLOCK,)](
        x, out, key, salt, n, int(round(p * 2**32)), 1.0 / (1.0 - p), BLOCK=BLOCK
    )
    return out


_TRITON: dict[str, bool] = {}


def _kernel(x: torch.Tensor):
    """On a GPU one Triton kernel when Triton imports (eager, `_apply` is ~20 passes over an int64 tensor)."""
    if not x.is_cuda:
        return _apply
    if "ok" not in _TRITON:
        try:
            import alignment_core.modeling.seeded_dropout_kernel  # noqa: F401 - imports triton
        except Exception as error:  # noqa: BLE001 - no Triton: the torch arithmetic is correct, only slower
            logger.warning("seeded dropout runs as torch ops: Triton unavailable (%s)", error)
            _TRITON["ok"] = False
        else:
            _TRITON["ok"] = True
    return _triton_apply if _TRITON["ok"] else _apply


def _masked(x: torch.Tensor, key: torch.Tensor, salt: torch.Tensor, p: float) -> torch.Tensor:
    # Integer mask arithmetic and a float32 scale whatever autocast says, as nn.Dropout computes.
    with torch.autocast(x.device.type, enabled=False):
        return _kernel(x)(x, key, salt, p)


class _SeededDropoutFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, key: torch.Tensor, salt: torch.Tensor, p: float) -> torch.Tensor:
        ctx.save_for_backward(key, salt)
        ctx.p = p
        return _masked(x, key, salt, p)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor):
        key, salt = ctx.saved_tensors
        return _masked(grad.contiguous(), key, salt, ctx.p), None, None, None


def seeded_dropout(x: torch.Tensor, key: torch.Tensor, salt: torch.Tensor, p: float) -> torch.Tensor:
    """Dropout of `x` with the mask of (key, salt); differentiable, the backward recomputes the mask."""
    return _SeededDropoutFunction.apply(x.contiguous(), key, salt, p)


class DropoutKey:
    """The key a layer's seeded dropouts read; set only while that layer's checkpointed forward runs."""

    def __init__(self) -> None:
        self.current: torch.Tensor | None = None

    @staticmethod
    def draw() -> int:
        return int(torch.randint(0, KEY_LIMIT, ()).item())


class SeededDropout(nn.Module):
    """Drop-in for nn.Dropout inside a graphed, checkpointed layer. Outside such a forward (no key set) it is
    plain nn.Dropout, so the module stays correct wherever it ends up being called."""

    def __init__(self, p: float, key: DropoutKey, salt: int) -> None:
        super().__init__()
        self.p = p
        self.key = key
        self.register_buffer("salt", torch.tensor(salt, dtype=torch.int64), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0:
            return x
        key = self.key.current
        if key is None:
            return nn.functional.dropout(x, self.p, True)
        return seeded_dropout(x, key, self.salt, self.p)

    def extra_repr(self) -> str:
        return f"p={self.p}, seeded"
