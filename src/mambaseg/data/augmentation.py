"""Training-time data augmentation as array transforms, seeded by a ``numpy.random.Generator``.

nnU-Net v2-like pipeline (``nnUNetTrainer.get_training_transforms``; probabilities per sample) built from MONAI
array transforms (MONAI is a runtime dependency of this module):

=========================  ==========================================================  ======
transform                  parameters                                                   p
=========================  ==========================================================  ======
``RandAffine``             rotation +-180 deg (2D) / +-30 deg (3D), scale 0.7-1.4,       0.2
                           bilinear image / nearest label, zero padding
``RandGaussianNoise``      std ~ U(0, 0.1)                                              0.1
``RandGaussianSmooth``     sigma ~ U(0.5, 1.0) per axis                                 0.2
``RandScaleIntensity``     x * (1 + U(-0.25, 0.25)) (nnU-Net's brightness 0.75-1.25)    0.15
``RandSimulateLowRes``     zoom 0.5-1 (nearest down, linear up)                         0.25
``RandAdjustContrast``     gamma 0.7-1.5 (nnU-Net's gamma transform)                    0.3
``RandFlip``               every spatial axis independently (nnU-Net's mirroring)       0.5
=========================  ==========================================================  ======

Differences from nnU-Net, on purpose: the patch is augmented after cropping (nnU-Net crops a larger patch first,
so its rotations bring in real context instead of zeros); rotation and scaling share one probability; nnU-Net's
separate contrast transform is not applied. The label follows every spatial transform with nearest-neighbour
interpolation, so its values are kept.

Determinism: every call takes a ``numpy.random.Generator``; one integer is drawn from it per transform and seeds
that transform's MONAI ``RandomState`` (``set_random_state``), so the output is a function of the generator state
alone (:func:`augment` is the functional core; :class:`Augmenter` holds the transforms).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = ["AugmentationParams", "Augmenter", "augment"]


@dataclass(frozen=True)
class AugmentationParams:
    """Probabilities and ranges of the pipeline (defaults: nnU-Net-like, see the module table)."""

    p_affine: float = 0.2
    rotation_deg_2d: float = 180.0
    rotation_deg_3d: float = 30.0
    scale_range: tuple[float, float] = (0.7, 1.4)
    p_noise: float = 0.1
    noise_std: float = 0.1
    p_blur: float = 0.2
    blur_sigma: tuple[float, float] = (0.5, 1.0)
    p_brightness: float = 0.15
    brightness: float = 0.25
    p_lowres: float = 0.25
    lowres_zoom: tuple[float, float] = (0.5, 1.0)
    p_gamma: float = 0.3
    gamma: tuple[float, float] = (0.7, 1.5)
    p_flip: float = 0.5


def _monai():
    try:
        import monai.transforms as mt
        from monai.utils import convert_to_numpy
    except ImportError as e:  # pragma: no cover - monai is a runtime dependency
        raise ImportError("data augmentation needs MONAI: pip install monai") from e
    return mt, convert_to_numpy


class Augmenter:
    """Holds the MONAI transforms for one dimensionality; call it with a generator.

    Args:
        spatial_dims: 2 or 3 (spatial axes of the arrays it receives).
        params: probabilities and ranges.

    Shapes:
        ``__call__(image (C, *P) float32, label (*P) int, rng) -> (image (C, *P) float32, label (*P) same dtype)``.
    """

    def __init__(self, spatial_dims: int, params: AugmentationParams | None = None) -> None:
        if spatial_dims not in (2, 3):
            raise ValueError(f"spatial_dims must be 2 or 3, got {spatial_dims}")
        mt, self._to_numpy = _monai()
        p = params or AugmentationParams()
        self.spatial_dims = spatial_dims
        self.params = p
        rot = math.radians(p.rotation_deg_2d if spatial_dims == 2 else p.rotation_deg_3d)
        # MONAI scales by 1 + U(-r, r); nnU-Net's (0.7, 1.4) is asymmetric: map its centre and half-width
        lo, hi = p.scale_range
        self._scale_shift = (lo + hi) / 2 - 1.0
        half = (hi - lo) / 2
        self.affine = mt.RandAffine(prob=p.p_affine, rotate_range=(rot,) * (1 if spatial_dims == 2 else 3),
                                    scale_range=(half,) * spatial_dims, padding_mode="zeros")
        self.noise = mt.RandGaussianNoise(prob=p.p_noise, mean=0.0, std=p.noise_std)
        self.blur = mt.RandGaussianSmooth(sigma_x=p.blur_sigma, sigma_y=p.blur_sigma, sigma_z=p.blur_sigma,
                                          prob=p.p_blur)
        self.brightness = mt.RandScaleIntensity(factors=p.brightness, prob=p.p_brightness)
        self.lowres = mt.RandSimulateLowResolution(prob=p.p_lowres, zoom_range=p.lowres_zoom,
                                                   upsample_mode="bilinear" if spatial_dims == 2 else "trilinear")
        self.gamma = mt.RandAdjustContrast(prob=p.p_gamma, gamma=p.gamma)
        self.flips = [mt.RandFlip(prob=p.p_flip, spatial_axis=a) for a in range(spatial_dims)]

    def __call__(self, image: np.ndarray, label: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        return augment(self, image, label, rng)


def _seed(t: Any, rng: np.random.Generator) -> None:
    t.set_random_state(seed=int(rng.integers(0, 2 ** 31 - 1)))


def augment(aug: Augmenter, image: np.ndarray, label: np.ndarray,
            rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Apply the pipeline of ``aug`` once, driven by ``rng`` (functional core of :class:`Augmenter`).

    Args:
        aug: the transforms.
        image: ``(C, *P)`` float32 patch.
        label: ``(*P)`` integer label patch.
        rng: the generator; exactly ``7 + spatial_dims`` integers are drawn from it, whatever happens.

    Returns:
        ``(image (C, *P) float32, label (*P))``, new arrays.
    """
    to_np = aug._to_numpy
    if image.ndim != aug.spatial_dims + 1 or label.shape != image.shape[1:]:
        raise ValueError(f"augment expects image (C, *P) and label (*P) with {aug.spatial_dims} spatial axes, "
                         f"got {image.shape} and {label.shape}")
    dtype = label.dtype
    img: Any = np.ascontiguousarray(image, dtype=np.float32)
    lab: Any = np.ascontiguousarray(label[None], dtype=np.float32)
    # spatial: affine (same parameters for image and label)
    _seed(aug.affine, rng)
    aug.affine.randomize(None)
    if aug.affine._do_transform:
        if aug._scale_shift:
            aug.affine.rand_affine_grid.scale_params = [s + aug._scale_shift
                                                        for s in aug.affine.rand_affine_grid.scale_params]
        img = to_np(aug.affine(img, mode="bilinear", randomize=False))
        lab = to_np(aug.affine(lab, mode="nearest", randomize=False))
    # intensity (image only)
    for t in (aug.noise, aug.blur, aug.brightness, aug.lowres, aug.gamma):
        _seed(t, rng)
        img = to_np(t(img))
    # mirroring
    for f in aug.flips:
        _seed(f, rng)
        f.randomize(None)
        if f._do_transform:
            img = to_np(f(img, randomize=False))
            lab = to_np(f(lab, randomize=False))
    img = np.ascontiguousarray(img, dtype=np.float32)
    lab = np.ascontiguousarray(np.rint(lab[0])).astype(dtype)
    return img, lab
