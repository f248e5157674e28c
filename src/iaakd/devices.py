"""Precision on a device: the autocast context that extraction, training and prediction share."""

from __future__ import annotations

from contextlib import AbstractContextManager, nullcontext

import torch

PRECISIONS = ("fp32", "bf16", "fp16")


def autocast_context(device: torch.device, precision: str) -> AbstractContextManager:
    """No-op for fp32; autocast to bfloat16 or float16 on ``device`` otherwise."""
    if precision == "fp32":
        return nullcontext()
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}[precision]
    return torch.autocast(device_type=device.type, dtype=dtype)
