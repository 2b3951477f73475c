"""The Triton kernel of seeded_dropout: the arithmetic of `seeded_dropout._apply`, per element, in uint32."""

from __future__ import annotations

import triton
import triton.language as tl

BLOCK = 1024


@triton.jit
def _mix(x):
    # uint32 multiplication wraps modulo 2**32: `_apply`'s `& 0xFFFFFFFF` after each product.
    x = ((x >> 16) ^ x) * 0x45D9F3B
    x = ((x >> 16) ^ x) * 0x45D9F3B
    return (x >> 16) ^ x


@triton.jit
def seeded_dropout_kernel(x_ptr, out_ptr, key_ptr, salt_ptr, n, threshold, scale, BLOCK: tl.constexpr):
    key = tl.load(key_ptr).to(tl.int64)
    salt = tl.load(salt_ptr).to(tl.int64)
    seed = ((key * 0x9E3779B1 + salt) & 0xFFFFFFFF).to(tl.uint32)
    k1 = _mix(seed)
    k2 = _mix(k1 ^ 0x5BD1E995)
    odd = (_mix(k2 ^ 0x27D4EB2F) & 0x7FFFFFF) | 1
    offsets = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    inside = offsets < n
    index = offsets.to(tl.uint32)
    h = _mix((index ^ k1) * odd)
    h = _mix(h ^ k2)
    keep = h.to(tl.int64) >= threshold
    x = tl.load(x_ptr + offsets, mask=inside, other=0.0)
    out = tl.where(keep, x.to(tl.float32) * scale, 0.0)
    tl.store(out_ptr + offsets, out.to(x.dtype), mask=inside)
