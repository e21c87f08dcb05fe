"""Agreement with MONAI 1.6 (boundary voxels = mask XOR face-connected erosion, as ours) on seeded random blobs.

Where the definitions coincide (Dice, HD95 = max of directed 95th percentiles, symmetric ASSD = pooled mean, surface
Dice with boundary voxels) values must agree within 1e-6, absolute or relative (MONAI returns float32 distances and
takes percentiles in float32, so large distances carry ~1e-7 relative rounding). Where they differ by design the
documented relation is tested: MONAI ``symmetric=False`` ASSD is the directed mean pred -> ref, and our pooled ASSD
is the boundary-size-weighted mean of the two directed means; MONAI's Dice is NaN for an empty reference
(``ignore_empty=True``) where ours is 0.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import ndimage

monai_metrics = pytest.importorskip("monai.metrics")
torch = pytest.importorskip("torch")

from mambaseg.evaluation import (  # noqa: E402 (after the importorskip of MONAI)
    assd,
    compute_case_metrics,
    dice,
    hausdorff,
    hd95,
    nsd,
    surface_distances,
)

pytestmark = [
    pytest.mark.filterwarnings("ignore::FutureWarning"),  # MONAI-internal deprecation of always_return_as_numpy
    pytest.mark.filterwarnings("ignore:the (prediction|ground truth) of class:UserWarning"),
]

TOL = 1e-6


def close(x):
    return pytest.approx(x, rel=TOL, abs=TOL)


def blob(shape, seed, sigma=2.0, frac=0.7):
    """Seeded smooth random blob(s): Gaussian-filtered noise thresholded at a quantile."""
    rng = np.random.default_rng(seed)
    field = ndimage.gaussian_filter(rng.standard_normal(shape), sigma)
    return field > np.quantile(field, frac)


def onehot(mask):
    return torch.from_numpy(np.asarray(mask, dtype=np.float32)[None, None])


CASES = [
    ((48, 40), (1.0, 1.0), 0),
    ((48, 40), (0.7, 2.5), 1),
    ((20, 24, 18), (3.0, 0.8, 0.8), 2),
    ((20, 24, 18), (1.0, 1.5, 0.5), 3),
]


@pytest.mark.parametrize("shape,spacing,seed", CASES)
def test_agrees_with_monai_on_blobs(shape, spacing, seed):
    p = blob(shape, seed)
    g = blob(shape, seed + 100)
    tp_, gt_ = onehot(p), onehot(g)
    sp = list(spacing)

    m_dice = monai_metrics.compute_dice(tp_, gt_, include_background=True).item()
    m_hd95 = monai_metrics.compute_hausdorff_distance(tp_, gt_, include_background=True, percentile=95, spacing=sp)
    m_hd = monai_metrics.compute_hausdorff_distance(tp_, gt_, include_background=True, spacing=sp)
    m_assd = monai_metrics.compute_average_surface_distance(tp_, gt_, include_background=True, symmetric=True,
                                                            spacing=sp)
    assert dice(p, g) == close(m_dice)
    assert hd95(p, g, spacing) == close(m_hd95.item())
    assert hausdorff(p, g, spacing) == close(m_hd.item())
    assert assd(p, g, spacing) == close(m_assd.item())
    for tau in (0.5, 1.0, 2.0, 3.3):
        m_nsd = monai_metrics.compute_surface_dice(
            tp_, gt_, class_thresholds=[tau], include_background=True, spacing=sp
        ).item()
        assert nsd(p, g, tau, spacing) == close(m_nsd)

    # the same numbers through the label-map entry point
    row = compute_case_metrics(p.astype(np.uint8), g.astype(np.uint8), [1], spacing, nsd_tolerance_mm=2.0)[0]
    assert row["hd95"] == close(m_hd95.item())
    assert row["assd"] == close(m_assd.item())

    # documented relation with MONAI's directed (default, symmetric=False) ASD
    d_pg = monai_metrics.compute_average_surface_distance(tp_, gt_, include_background=True, spacing=sp).item()
    d_gp = monai_metrics.compute_average_surface_distance(gt_, tp_, include_background=True, spacing=sp).item()
    sd = surface_distances(p, g, spacing)
    n_p, n_g = sd.pred_to_ref.size, sd.ref_to_pred.size
    assert sd.pred_to_ref.mean() == close(d_pg)
    assert sd.ref_to_pred.mean() == close(d_gp)
    assert assd(p, g, spacing) == close((n_p * d_pg + n_g * d_gp) / (n_p + n_g))


def test_v4_nsd_matches_monai_voxel_boundary():
    g = np.zeros((100, 100, 100), bool)
    p = np.zeros_like(g)
    g[0:50] = True
    p[0:51] = True
    sp = (2.0, 1.0, 1.0)
    m = monai_metrics.compute_surface_dice(onehot(p), onehot(g), class_thresholds=[1.0], include_background=True,
                                           spacing=list(sp)).item()
    ours = nsd(p, g, 1.0, sp)
    assert ours == close(m)
    assert abs(ours - 0.836145) > 1e-3  # DeepMind / MONAI use_subvoxels=True value: a different definition


def test_documented_empty_differences_with_monai():
    shape = (16, 16)
    g = np.zeros(shape, bool)
    p = np.zeros(shape, bool)
    p[4:8, 4:8] = True  # reference empty, prediction not
    m = monai_metrics.compute_dice(onehot(p), onehot(g), include_background=True).item()
    assert math.isnan(m)  # MONAI ignore_empty=True ignores the false positive
    assert dice(p, g) == 0.0  # we score it 0
    m_hd = monai_metrics.compute_hausdorff_distance(onehot(g), onehot(p), include_background=True).item()
    assert m_hd == math.inf and hausdorff(g, p) == math.inf
