"""Efficiency measurements of models and operators: parameters, FLOPs including the selective scan."""

from .efficiency import count_flops, count_parameters

__all__ = ["count_flops", "count_parameters"]
