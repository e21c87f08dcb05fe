"""Parameter and FLOP counts of a model, with the selective scan counted (thop and fvcore skip it).

FLOPs follow ``torch.utils.flop_counter`` (a multiply-add is 2 FLOPs, as in ``2 M N K`` for a matmul; papers that
use fvcore or thop report multiply-adds, about half of this number). Each selective-scan call adds
``9 B D L N`` FLOPs, the count VMamba uses (``flops_selective_scan_ref``; Albert Gu, state-spaces/mamba issue
#110), plus ``B D L`` for the ``D`` skip and ``B D L`` for the ``z`` gate when present. During counting the scan is
replaced by a stand-in that returns zeros, so none of its internal operations are counted twice.
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from ..ops import use_backend

_scan_flops = [0]


def count_parameters(model: nn.Module, trainable_only: bool = False) -> int:
    """Number of parameters (shared parameters counted once)."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)


def _scan_stand_in(u, delta, A, B, C, D=None, z=None, delta_bias=None, delta_softplus=False,
                   return_last_state=False):
    batch, dim, length = u.shape
    _scan_flops[0] += 9 * batch * dim * length * A.shape[1]
    _scan_flops[0] += batch * dim * length * ((D is not None) + (z is not None))
    out = torch.zeros_like(u)
    return (out, u.new_zeros(batch, dim, A.shape[1])) if return_last_state else out


def count_flops(model: nn.Module, input_shape: Sequence[int]) -> dict:
    """FLOPs of one forward pass on a zero input of ``input_shape`` (e.g. ``(1, 1, 224, 224)``).

    Returns:
        ``{"total": int, "scan": int, "other": int}``.
    """
    _scan_flops[0] = 0
    param = next(model.parameters(), None)
    x = torch.zeros(*input_shape, device=param.device if param is not None else "cpu")
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad(), use_backend(_scan_stand_in), FlopCounterMode(display=False) as counter:
            model(x)
    finally:
        model.train(was_training)
    other = int(counter.get_total_flops())
    return {"total": other + _scan_flops[0], "scan": _scan_flops[0], "other": other}
