"""Small tensor helpers of the model's loops: chunked calls and per-step outputs stacked."""

from __future__ import annotations

import torch


def in_chunks(fn, chunk: int, *tensors: torch.Tensor):
    """fn(*tensors) computed `chunk` items (dim 0) at a time and concatenated; 0: one call.

    Same math either way; on a CPU, chunks of a few frames keep each layer's activations in the
    caches, which the whole folded clip (B*T frames) overflows (BENCHMARKS.md, section 1).
    A None among `tensors` (an optional input that is off) is passed to every call as None.
    """
    if chunk <= 0 or tensors[0].shape[0] <= chunk:
        return fn(*tensors)
    parts = [None if t is None else t.split(chunk) for t in tensors]
    outs = [fn(*(None if p is None else p[i] for p in parts)) for i in range(len(parts[0]))]
    if isinstance(outs[0], tuple):  # an output that is None (no mask) stays None
        return tuple(None if group[0] is None else torch.cat(group)
                     for group in zip(*outs, strict=True))
    return torch.cat(outs)


def stack_steps(values: list, dim: int = 1):
    """Per-step outputs stacked along `dim`: tensors, tuples of tensors (each stacked), or
    None (every step's None: None)."""
    if values[0] is None:
        return None
    if isinstance(values[0], tuple):
        return tuple(torch.stack(group, dim) for group in zip(*values, strict=True))
    return torch.stack(values, dim)
