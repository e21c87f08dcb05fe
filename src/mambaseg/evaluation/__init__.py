"""Evaluation: per-case, per-class segmentation metrics, aggregation with edge-case counts, comparison statistics.

Conventions (boundary definition, HD95/ASSD/NSD variants, empty masks, spacing order) are documented in
:mod:`mambaseg.evaluation.metrics`; aggregation rules in :mod:`mambaseg.evaluation.aggregate`; test choices in
:mod:`mambaseg.evaluation.statistics`.
"""

from .aggregate import describe, pooled_dice, summarize, to_jsonable
from .metrics import (
    ALL_METRICS,
    DEFAULT_METRICS,
    DISTANCE_METRICS,
    SurfaceDistances,
    assd,
    boundary,
    compute_case_metrics,
    confusion_counts,
    dice,
    hausdorff,
    hd95,
    image_diagonal_mm,
    iou,
    masd,
    nsd,
    precision,
    sensitivity,
    surface_distances,
)
from .statistics import (
    BootstrapCI,
    FriedmanResult,
    WilcoxonResult,
    average_ranks,
    bootstrap_ci,
    friedman,
    holm,
    nemenyi_cd,
    paired_bootstrap_mean_diff_ci,
    paired_wilcoxon,
    pairwise_wilcoxon,
)

__all__ = [
    "ALL_METRICS",
    "DEFAULT_METRICS",
    "DISTANCE_METRICS",
    "BootstrapCI",
    "FriedmanResult",
    "SurfaceDistances",
    "WilcoxonResult",
    "assd",
    "average_ranks",
    "bootstrap_ci",
    "boundary",
    "compute_case_metrics",
    "confusion_counts",
    "describe",
    "dice",
    "friedman",
    "hausdorff",
    "hd95",
    "holm",
    "image_diagonal_mm",
    "iou",
    "masd",
    "nemenyi_cd",
    "nsd",
    "paired_bootstrap_mean_diff_ci",
    "paired_wilcoxon",
    "pairwise_wilcoxon",
    "pooled_dice",
    "precision",
    "sensitivity",
    "summarize",
    "surface_distances",
    "to_jsonable",
]
