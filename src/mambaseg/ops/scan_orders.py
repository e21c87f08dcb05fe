"""Scan orders: how a 2D/3D feature map is serialised for a 1-D selective scan.

A selective state-space model (Mamba) is a causal 1-D sequence operator. Vision
Mamba models therefore *serialise* the tokens of a feature map into one or more
1-D sequences ("directions"), run a scan over each, and fold the per-direction
outputs back onto the grid. A *scan order* bundles both halves:

* ``flatten(x)``: ``(B, C, *spatial) -> (B, K, C, L)`` with ``L = prod(spatial)``;
  direction ``k`` lists the tokens in the order in which scan ``k`` visits them.
* ``merge(y, spatial_shape)``: ``(B, K, C, L) -> (B, C, *spatial)``; un-permutes
  every direction back to raster position and sums over ``K``.

``merge`` is the exact adjoint of ``flatten`` (each direction is a permutation),
so ``merge(flatten(x), x.shape[2:]) == K * x`` and
``<flatten(x), y> == <x, merge(y, shape)>``. ``merge`` takes the spatial shape as
an explicit argument and keeps no state between calls.

Every direction is stored as a permutation ``perm[k]`` of length ``L`` of *flat
row-major token indices*: position ``p`` of direction ``k`` holds the token at
flat index ``perm[k, p]`` of ``x.flatten(2)``. Permutations (and their inverses)
are built once per ``(spatial shape, device)`` and cached on the order object;
``flatten``/``merge`` are single ``gather`` calls, hence differentiable.

Orders (``list_scan_orders()``), with the work each one follows:

==================  ==  ===  ===========================================================
name                K   dim  source
==================  ==  ===  ===========================================================
``raster``          1   2D   plain row-major flatten (Mamba on image tokens)
``bidirectional``   2   2D   Vim (Zhu et al. 2024, hustvl/Vim, ``bimamba_type="v2"``)
``cross``           4   2D   VMamba SS2D CrossScan/CrossMerge (Liu et al. 2024); VM-UNet
``snake``           4   2D   continuous zig-zag (boustrophedon) scans, as in PlainMamba / ZigMa
``diagonal``        4   2D   diagonal scans (generic variant, no single reference code)
``local``           4   2D   LocalMamba windowed scans (Huang et al. 2024, hunto/LocalMamba)
``tri``             3   3D   SegMamba tri-oriented Mamba, ToM (Xing et al. 2024)
``six``             6   3D   the three axis-aligned raster orders of a volume, both ways
==================  ==  ===  ===========================================================
"""

from __future__ import annotations

import math
from typing import Dict, List, Sequence, Tuple, Type

import torch
from torch import Tensor

__all__ = ["ScanOrder", "get_scan_order", "list_scan_orders"]

_MAX_CACHE_ENTRIES = 64  # per order object; cleared wholesale when exceeded


def _grid(shape: Tuple[int, ...]) -> Tensor:
    """Flat row-major token indices arranged on the grid, shape ``shape``."""
    return torch.arange(math.prod(shape), dtype=torch.long).view(shape)


def _coords(h: int, w: int) -> Tuple[Tensor, Tensor]:
    """Row/column index of every token of an ``(h, w)`` grid, each shape (h, w)."""
    i = torch.arange(h, dtype=torch.long).view(h, 1).expand(h, w)
    j = torch.arange(w, dtype=torch.long).view(1, w).expand(h, w)
    return i, j


class ScanOrder:
    """Base class: K token permutations of a 2D or 3D grid plus flatten/merge.

    Subclasses set ``name``, ``num_directions``, ``spatial_dims`` and implement
    ``_build(shape)``, returning the ``K`` permutations for one spatial shape.

    Attributes:
        name: Registry name of the order.
        num_directions: Number of directions ``K``.
        spatial_dims: 2 (input ``(B, C, H, W)``) or 3 (input ``(B, C, D, H, W)``).
    """

    name: str = ""
    num_directions: int = 0
    spatial_dims: int = 2

    def __init__(self, **options) -> None:
        if options:
            raise TypeError(
                f"scan order {self.name!r} takes no options, got {sorted(options)}"
            )
        self._cache: Dict[Tuple[Tuple[int, ...], torch.device], Tuple[Tensor, Tensor]] = {}

    # ------------------------------------------------------------------ helpers
    @property
    def _layout(self) -> str:
        return "(B, C, H, W)" if self.spatial_dims == 2 else "(B, C, D, H, W)"

    def _check_shape(self, spatial_shape: Sequence[int]) -> Tuple[int, ...]:
        shape = tuple(int(s) for s in spatial_shape)
        if len(shape) != self.spatial_dims or any(s < 1 for s in shape):
            names = "(H, W)" if self.spatial_dims == 2 else "(D, H, W)"
            raise ValueError(
                f"scan order {self.name!r} expects spatial_shape {names} with "
                f"{self.spatial_dims} positive sizes, got {tuple(spatial_shape)}"
            )
        return shape

    def _build(self, shape: Tuple[int, ...]) -> List[Tensor]:
        """Return the K permutations (1-D CPU LongTensors of length L) for ``shape``."""
        raise NotImplementedError

    def _indices(self, shape: Tuple[int, ...], device: torch.device) -> Tuple[Tensor, Tensor]:
        key = (shape, device)
        hit = self._cache.get(key)
        if hit is None:
            # Normal (non-inference) tensors, so a cache filled under
            # torch.inference_mode() still works later with autograd.
            with torch.inference_mode(False):
                perm = torch.stack(self._build(shape)).contiguous()  # (K, L)
                k, n = perm.shape
                inv = torch.empty_like(perm)
                inv.scatter_(1, perm, torch.arange(n, dtype=torch.long).expand(k, n))
                hit = (perm.to(device), inv.to(device))
            if len(self._cache) >= _MAX_CACHE_ENTRIES:
                self._cache.clear()
            self._cache[key] = hit
        return hit

    # --------------------------------------------------------------- public API
    def permutations(self, spatial_shape: Sequence[int], device=None) -> Tensor:
        """Token visiting order of every direction.

        Args:
            spatial_shape: ``(H, W)`` or ``(D, H, W)``.
            device: Device of the returned tensor (default CPU).

        Returns:
            LongTensor of shape ``(K, L)``; row ``k`` lists flat row-major token
            indices in the order direction ``k`` visits them. Cached; do not modify.
        """
        dev = torch.device("cpu") if device is None else torch.device(device)
        return self._indices(self._check_shape(spatial_shape), dev)[0]

    def flatten(self, x: Tensor) -> Tensor:
        """Serialise a feature map into K token sequences.

        Args:
            x: ``(B, C, H, W)`` for 2D orders or ``(B, C, D, H, W)`` for 3D orders.

        Returns:
            Contiguous tensor ``(B, K, C, L)`` with ``L = prod(x.shape[2:])``.

        Raises:
            ValueError: If ``x`` does not have ``spatial_dims + 2`` dimensions.
        """
        if x.dim() != self.spatial_dims + 2:
            raise ValueError(
                f"scan order {self.name!r} is {self.spatial_dims}D and expects x of "
                f"shape {self._layout}, got a {x.dim()}-D tensor of shape {tuple(x.shape)}"
            )
        b, c = x.shape[:2]
        perm, _ = self._indices(self._check_shape(x.shape[2:]), x.device)
        k, n = perm.shape
        xf = x.flatten(2).unsqueeze(1).expand(b, k, c, n)
        return torch.gather(xf, 3, perm.view(1, k, 1, n).expand(b, k, c, n))

    def merge(self, y: Tensor, spatial_shape: Sequence[int]) -> Tensor:
        """Fold K sequence outputs back onto the grid and sum them (adjoint of flatten).

        Args:
            y: ``(B, K, C, L)`` per-direction outputs, position ``p`` of direction
                ``k`` belonging to the token that ``flatten`` put there.
            spatial_shape: ``(H, W)`` or ``(D, H, W)`` with ``prod == L`` (e.g.
                ``x.shape[2:]`` of the tensor that was flattened).

        Returns:
            ``(B, C, *spatial_shape)``; ``merge(flatten(x), x.shape[2:]) == K * x``.

        Raises:
            ValueError: If ``y`` is not ``(B, K, C, L)`` matching this order and shape.
        """
        shape = self._check_shape(spatial_shape)
        n = math.prod(shape)
        k = self.num_directions
        if y.dim() != 4 or y.shape[1] != k or y.shape[3] != n:
            raise ValueError(
                f"scan order {self.name!r} expects y of shape (B, K={k}, C, L={n}) for "
                f"spatial_shape {shape}, got {tuple(y.shape)}"
            )
        b, _, c, _ = y.shape
        _, inv = self._indices(shape, y.device)
        out = torch.gather(y, 3, inv.view(1, k, 1, n).expand(b, k, c, n)).sum(1)
        return out.view(b, c, *shape)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r}, K={self.num_directions})"


# ============================================================================ 2D
class RasterScan(ScanOrder):
    """``raster``: K=1, row-major flatten of ``(H, W)`` (W fastest)."""

    name, num_directions, spatial_dims = "raster", 1, 2

    def _build(self, shape):
        return [_grid(shape).flatten()]


class BidirectionalScan(ScanOrder):
    """``bidirectional`` (Vim): K=2: 0 = raster, 1 = raster reversed.

    Matches hustvl/Vim ``mamba_simple.py`` (``bimamba_type="v2"``): the backward
    branch scans ``xz.flip([-1])`` and its output is flipped back before the sum.
    """

    name, num_directions, spatial_dims = "bidirectional", 2, 2

    def _build(self, shape):
        r = _grid(shape).flatten()
        return [r, r.flip(0)]


class CrossScan(ScanOrder):
    """``cross`` (VMamba SS2D CrossScan / CrossMerge): K=4.

    0 = row-major flatten of ``(H, W)``; 1 = column-major (flatten of the
    ``(W, H)`` transpose); 2 = direction 0 reversed; 3 = direction 1 reversed.
    Identical to VMamba ``cross_scan_fwd`` (``scans=0``) in
    ``classification/models/csm_triton.py`` and the v0 ``x_hwwh`` /
    ``torch.flip`` construction of VM-UNet, so the K per-direction parameter sets
    of official checkpoints line up with our direction indices.
    """

    name, num_directions, spatial_dims = "cross", 4, 2

    def _build(self, shape):
        g = _grid(shape)
        r, c = g.flatten(), g.t().flatten()
        return [r, c, r.flip(0), c.flip(0)]

    # The same permutations as transposes and flips: strided copies instead of an index gather/scatter
    # (about 3x faster on CPU, and their autograd needs no index tensors).
    def flatten(self, x: Tensor) -> Tensor:
        if x.dim() != 4:
            return super().flatten(x)  # raises the shape error
        rows = x.flatten(2)
        cols = x.transpose(2, 3).flatten(2)
        return torch.stack([rows, cols, rows.flip(-1), cols.flip(-1)], dim=1)

    def merge(self, y: Tensor, spatial_shape: Sequence[int]) -> Tensor:
        h, w = self._check_shape(spatial_shape)
        if y.dim() != 4 or y.shape[1] != 4 or y.shape[3] != h * w:
            return super().merge(y, spatial_shape)  # raises the shape error
        b, _, c, n = y.shape
        y0, y1, y2, y3 = y.unbind(1)  # unbind, not indexing: its backward is one stack, not four zero-filled buffers
        rows = y0 + y2.flip(-1)
        cols = (y1 + y3.flip(-1)).view(b, c, w, h).transpose(2, 3)
        return rows.view(b, c, h, w) + cols


def _snake(g: Tensor) -> Tensor:
    """Boustrophedon over the rows of a 2-D index grid (odd rows reversed)."""
    g = g.clone()
    g[1::2] = g[1::2].flip(-1)
    return g.flatten()


class SnakeScan(ScanOrder):
    """``snake``: boustrophedon (zig-zag) scans, K=4.

    0 = row snake: row 0 left-to-right, row 1 right-to-left, row 2 left-to-right, ...
    1 = column snake: column 0 top-to-bottom, column 1 bottom-to-top, ...
    2 = direction 0 reversed; 3 = direction 1 reversed.
    Consecutive tokens are always grid neighbours (no jump at line ends). For a
    3x3 grid numbered 0..8 row-major: 0 = [0,1,2,5,4,3,6,7,8],
    1 = [0,3,6,7,4,1,2,5,8].
    """

    name, num_directions, spatial_dims = "snake", 4, 2

    def _build(self, shape):
        g = _grid(shape)
        r, c = _snake(g), _snake(g.t())
        return [r, c, r.flip(0), c.flip(0)]


class DiagonalScan(ScanOrder):
    """``diagonal``: scans along the two diagonal families, K=4.

    0 = tokens with equal ``i + j`` contiguous ("/" lines), groups in increasing
        ``i + j`` (starting at the top-left corner), within a group increasing ``i``
        (i.e. each "/" line walked from top-right to bottom-left);
    1 = tokens with equal ``i - j`` contiguous ("\\" lines), groups in increasing
        ``i - j`` (starting at the top-right corner), within a group increasing ``i``.
        This is direction 0 of the horizontally mirrored image;
    2 = direction 0 reversed; 3 = direction 1 reversed.
    For a 2x3 grid numbered 0..5: 0 = [0,1,3,2,4,5], 1 = [2,1,5,0,4,3].
    """

    name, num_directions, spatial_dims = "diagonal", 4, 2

    def _build(self, shape):
        h, w = shape
        i, j = _coords(h, w)
        d0 = torch.argsort(((i + j) * h + i).flatten())
        d1 = torch.argsort(((i - j + w - 1) * h + i).flatten())
        return [d0, d1, d0.flip(0), d1.flip(0)]


class LocalScan(ScanOrder):
    """``local`` (LocalMamba windowed scans): K=4, option ``window`` (default 7).

    The grid is cut into ``window x window`` tiles; the tokens of a tile are
    contiguous in every direction.
    0 = tiles in raster order (tile rows top-to-bottom, left-to-right), row-major
        inside each tile (LocalMamba ``local_scan(..., column_first=False)``);
    1 = tiles in column-major order (tile columns left-to-right, each top-to-bottom),
        column-major inside each tile (LocalMamba ``column_first=True``); i.e.
        direction 0 of the transposed image. (We follow LocalMamba here: its
        column variant also walks the *tiles* column-major, not in raster order.)
    2 = direction 0 reversed; 3 = direction 1 reversed (LocalMamba ``flip=True``).
    Difference from LocalMamba: for H or W not divisible by ``window`` LocalMamba
    zero-pads to full tiles and scans the padding tokens too; we do not pad, edge
    tiles are simply smaller. Our sequence equals LocalMamba's with the padding
    positions removed (identical when both sizes are divisible by ``window``).
    Example, 3x5 grid numbered 0..14, window 2:
    0 = [0,1,5,6, 2,3,7,8, 4,9, 10,11, 12,13, 14],
    1 = [0,5,1,6, 10,11, 2,7,3,8, 12,13, 4,9, 14].

    Args:
        window: Tile side length, a positive int.
    """

    name, num_directions, spatial_dims = "local", 4, 2

    def __init__(self, window: int = 7) -> None:
        if isinstance(window, bool) or not isinstance(window, int) or window < 1:
            raise ValueError(f"scan order 'local': window must be a positive int, got {window!r}")
        super().__init__()
        self.window = window

    def _build(self, shape):
        h, w = shape
        s = self.window
        i, j = _coords(h, w)
        ti, a, tj, b = i // s, i % s, j // s, j % s
        nth, ntw = -(-h // s), -(-w // s)
        d0 = torch.argsort((((ti * ntw + tj) * s + a) * s + b).flatten())
        d1 = torch.argsort((((tj * nth + ti) * s + b) * s + a).flatten())
        return [d0, d1, d0.flip(0), d1.flip(0)]

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name='local', K=4, window={self.window})"


# ============================================================================ 3D
class TriScan(ScanOrder):
    """``tri`` (SegMamba tri-oriented Mamba, ``bimamba_type="v3"``): K=3.

    0 = forward: row-major flatten of ``(D, H, W)`` (SegMamba's ``x.reshape(B, C, N)``);
    1 = backward: direction 0 reversed (``xz.flip([-1])``, output flipped back);
    2 = inter-slice: SegMamba's ``torch.stack(xz.chunk(nslices, dim=-1), dim=-1)
        .flatten(-2)`` with ``nslices = D``: the D tokens at the same in-slice
        ``(h, w)`` are contiguous, i.e. the flatten of x permuted to ``(H, W, D)``.
        Not reversed. SegMamba maps it back with
        ``out_s.reshape(B, C, L // D, D).permute(0, 1, 3, 2).flatten(-2)``, which is
        exactly the inverse permutation used by ``merge``.
    SegMamba fixes ``nslices`` per stage in its config (``num_slices_list =
    [64, 32, 16, 8]`` in ``model_segmamba/segmamba.py``), which equals D at each
    encoder stage for its 128^3 input; we always use the actual D, so any depth
    works. For a (D, H, W) = (2, 1, 2) volume numbered 0..3: 2 = [0, 2, 1, 3].
    """

    name, num_directions, spatial_dims = "tri", 3, 3

    def _build(self, shape):
        g = _grid(shape)
        f = g.flatten()
        return [f, f.flip(0), g.permute(1, 2, 0).flatten()]


class SixScan(ScanOrder):
    """``six``: the three axis-aligned raster orders of a volume, both ways, K=6.

    Axis orders (slowest -> fastest); the two slower axes keep their natural
    D-before-H-before-W order:
    0 = (D, H, W): W fastest (plain row-major flatten, = ``tri`` direction 0);
    1 = (D, W, H): H fastest;
    2 = (H, W, D): D fastest (= ``tri`` direction 2, SegMamba's inter-slice order);
    3, 4, 5 = directions 0, 1, 2 reversed (VMamba convention: forwards, then flips).
    """

    name, num_directions, spatial_dims = "six", 6, 3

    def _build(self, shape):
        g = _grid(shape)
        fw = [g.flatten(), g.permute(0, 2, 1).flatten(), g.permute(1, 2, 0).flatten()]
        return fw + [p.flip(0) for p in fw]


# ====================================================================== registry
_REGISTRY: Dict[str, Type[ScanOrder]] = {
    cls.name: cls
    for cls in (RasterScan, BidirectionalScan, CrossScan, SnakeScan, DiagonalScan,
                LocalScan, TriScan, SixScan)
}


def list_scan_orders() -> List[str]:
    """Names accepted by :func:`get_scan_order` (2D orders first, then 3D)."""
    return list(_REGISTRY)


def get_scan_order(name: str, **options) -> ScanOrder:
    """Create a scan order by name.

    Args:
        name: One of :func:`list_scan_orders`.
        **options: Order-specific options (only ``local`` has one: ``window``).

    Returns:
        A new :class:`ScanOrder` (each object owns its permutation cache).

    Raises:
        ValueError: Unknown ``name`` or invalid option value.
        TypeError: Option not accepted by that order.
    """
    if not isinstance(name, str) or name not in _REGISTRY:
        raise ValueError(
            f"get_scan_order: unknown scan order name={name!r}; "
            f"valid names are: {', '.join(_REGISTRY)}"
        )
    return _REGISTRY[name](**options)
