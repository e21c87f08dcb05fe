"""The plan: every data decision a run makes, written to ``RUN_DIR/plan.json`` and re-read by prediction.

A plan is derived once from a dataset (see :mod:`mambaseg.data.planning`) and then fixes how images are
normalised and resampled, the patch and batch size, and how a 2D model meets 3D volumes. Training and
prediction both read it, so a prediction is always pre-processed exactly as the training data was.

Axis conventions are those of :mod:`mambaseg.data.io`: arrays ``(C, *spatial)`` with spatial axes in SimpleITK
array order (``z, y, x`` / ``y, x``) and spacings in that same order.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Optional

__all__ = ["Plan", "NORMALIZATION_SCHEMES"]

#: Per-channel intensity normalisation schemes (nnU-Net's): CT = clip to the foreground's [0.5, 99.5]
#: percentiles then z-score with the foreground mean/std of the training set; zscore = per-image z-score
#: (MR and anything else); rgb = divide by 255; none = leave as is.
NORMALIZATION_SCHEMES = ("ct", "zscore", "rgb", "none")


@dataclass
class Plan:
    """Data plan of one run.

    Attributes:
        spatial_dims: Dimensionality of the model (2 or 3).
        channel_names: Input channel names, from ``dataset.json``.
        normalization: One scheme of :data:`NORMALIZATION_SCHEMES` per channel.
        intensity_stats: Per channel; for ``"ct"``: ``mean``, ``std``, ``percentile_00_5``, ``percentile_99_5``
            of the foreground voxels of the training cases. Empty dicts for the other schemes.
        labels: ``dataset.json`` labels (name -> integer), background 0.
        num_classes: Model output channels (softmax over ``num_classes`` including background).
        patch_size: Training patch / sliding-window tile size (spatial, ``spatial_dims`` entries).
        batch_size: Training batch size.
        target_spacing: Spacing (array order, all image axes) that images are resampled to; None = no resampling.
        slice_axis: For a 2D model on 3D images: the image axis that is sliced (0 = z); None otherwise.
        extra: Free-form additions (recorded, not interpreted).
    """

    spatial_dims: int
    channel_names: list[str]
    normalization: list[str]
    labels: dict[str, int]
    num_classes: int
    patch_size: list[int]
    batch_size: int
    intensity_stats: list[dict[str, float]] = field(default_factory=list)
    target_spacing: Optional[list[float]] = None
    slice_axis: Optional[int] = None
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.spatial_dims not in (2, 3):
            raise ValueError(f"Plan.spatial_dims must be 2 or 3, got {self.spatial_dims}")
        if len(self.normalization) != len(self.channel_names):
            raise ValueError(f"Plan: {len(self.normalization)} normalization schemes for "
                             f"{len(self.channel_names)} channels {self.channel_names}")
        bad = [s for s in self.normalization if s not in NORMALIZATION_SCHEMES]
        if bad:
            raise ValueError(f"Plan: unknown normalization {bad}; choose from {NORMALIZATION_SCHEMES}")
        if len(self.patch_size) != self.spatial_dims:
            raise ValueError(f"Plan.patch_size {self.patch_size} must have {self.spatial_dims} entries")
        if not self.intensity_stats:
            self.intensity_stats = [{} for _ in self.channel_names]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Plan":
        return cls(**d)

    def save(self, path: str | Path) -> Path:
        path = Path(path)
        path.write_text(json.dumps(self.to_dict(), indent=2))
        return path

    @classmethod
    def load(cls, path: str | Path) -> "Plan":
        path = Path(path)
        try:
            return cls.from_dict(json.loads(path.read_text()))
        except (OSError, ValueError, TypeError) as e:
            raise ValueError(f"{path}: not a readable mambaseg plan ({e})") from e
