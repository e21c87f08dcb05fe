"""Inference: sliding-window prediction with Gaussian blending and mirroring TTA (nnU-Net v2 conventions)."""

from mambaseg.inference.predictor import Predictor
from mambaseg.inference.sliding_window import (
    compute_gaussian,
    compute_steps_for_sliding_window,
    predict_with_tta,
    sliding_window_inference,
)

__all__ = ["Predictor", "compute_gaussian", "compute_steps_for_sliding_window", "predict_with_tta",
           "sliding_window_inference"]
