"""Swin Transformer block: (shifted-)window multi-head self-attention with relative position bias, then an MLP.

Paper:
    Z. Liu et al., "Swin Transformer: Hierarchical Vision Transformer using Shifted Windows",
    arXiv:2103.14030; used unchanged by Swin-UNet (H. Cao et al., arXiv:2105.05537).

Official code (read, not copied): HuCaoFighting/Swin-Unet at 1c8b3e8,
``networks/swin_transformer_unet_skip_expand_decoder_sys.py`` (``Mlp``, ``WindowAttention``,
``SwinTransformerBlock``). Parameter and buffer names are kept (``norm1``, ``attn.qkv``,
``attn.proj``, ``attn.relative_position_bias_table``, ``attn.relative_position_index``,
``attn_mask``, ``norm2``, ``mlp.fc1``, ``mlp.fc2``) and so is the layout of the bias table
(``(2Wh-1)(2Ww-1)`` rows, row ``(dy + Wh - 1) * (2Ww - 1) + (dx + Ww - 1)``), so official
weights load unchanged.

Any grid size (deliberate difference; identical to the official block when the grid is a
multiple of the window): the official block only accepts the ``input_resolution`` it was built
for. Here the block takes ``(B, H, W, C)`` of any size. As the official block, when
``input_resolution`` is given and ``min(input_resolution) <= window_size`` the window shrinks to
``min(input_resolution)`` and the shift is dropped (decided at construction, it sets the size of
the bias table). At run time ``H`` and ``W`` are zero-padded (after ``norm1``) to multiples of the
window, as Swin's detection code, and the attention mask excludes the padded tokens as keys in
addition to the usual shifted-window regions, so real tokens never attend to padding and the
result on real tokens does not depend on how much padding was added. The mask for the
construction-time resolution is precomputed (buffer ``attn_mask``, as the official block); any
other size builds its mask on the fly.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from mambaseg.layers.drop import DropPath

__all__ = [
    "Mlp",
    "SwinTransformerBlock",
    "WindowAttention",
    "relative_position_index",
    "shifted_window_mask",
    "window_partition",
    "window_reverse",
]

MASK_VALUE = -100.0  # the official fill value for forbidden pairs


def window_partition(x: Tensor, window_size: int) -> Tensor:
    """``(B, H, W, C)`` -> ``(B * nW, ws * ws, C)``; ``H``, ``W`` multiples of ``window_size``, windows row-major."""
    b, h, w, c = x.shape
    x = x.reshape(b, h // window_size, window_size, w // window_size, window_size, c)
    return x.permute(0, 1, 3, 2, 4, 5).reshape(-1, window_size * window_size, c)


def window_reverse(windows: Tensor, window_size: int, h: int, w: int) -> Tensor:
    """Inverse of :func:`window_partition`: ``(B * nW, ws * ws, C)`` -> ``(B, H, W, C)``."""
    c = windows.shape[-1]
    x = windows.reshape(-1, h // window_size, w // window_size, window_size, window_size, c)
    return x.permute(0, 1, 3, 2, 4, 5).reshape(-1, h, w, c)


def relative_position_index(window_size: tuple[int, int]) -> Tensor:
    """``(Wh*Ww, Wh*Ww)`` long: row of the bias table for each (query, key) pair of a window.

    Index of the pair (i, j) with offsets ``dy = y_i - y_j``, ``dx = x_i - x_j`` is
    ``(dy + Wh - 1) * (2 * Ww - 1) + (dx + Ww - 1)`` (the official layout).
    """
    wh, ww = window_size
    ys, xs = torch.meshgrid(torch.arange(wh), torch.arange(ww), indexing="ij")
    ys, xs = ys.flatten(), xs.flatten()
    dy = ys[:, None] - ys[None, :] + (wh - 1)
    dx = xs[:, None] - xs[None, :] + (ww - 1)
    return dy * (2 * ww - 1) + dx


def shifted_window_mask(h: int, w: int, window_size: int, shift_size: int, valid_hw: tuple[int, int] | None = None,
                        device=None) -> Tensor | None:
    """Additive attention mask ``(nW, ws*ws, ws*ws)`` (0 allowed, -100 forbidden) for a padded grid ``h x w``.

    Built on the grid *after* the cyclic shift by ``-shift_size``: tokens of different regions
    (``[0, h-ws)``, ``[h-ws, h-s)``, ``[h-s, h)`` per axis, as the official code) may not attend to
    each other. If ``valid_hw = (H, W)`` is smaller than ``(h, w)``, tokens that were padding
    (original row ``>= H`` or column ``>= W``) are forbidden as keys as well. Returns ``None`` when
    nothing is masked (no shift, no padding).
    """
    valid_h, valid_w = valid_hw if valid_hw is not None else (h, w)
    padded = valid_h < h or valid_w < w
    if shift_size == 0 and not padded:
        return None
    # Labels from comparisons rather than slice writes (empty slice writes break ONNX shape inference).
    rows, cols = torch.arange(h, device=device), torch.arange(w, device=device)
    if shift_size > 0:  # per axis: [0, n-ws) -> 0, [n-ws, n-s) -> 1, [n-s, n) -> 2 (the official regions)
        lab_h = (rows >= h - window_size).long() + (rows >= h - shift_size).long()
        lab_w = (cols >= w - window_size).long() + (cols >= w - shift_size).long()
        region = (lab_h[:, None] * 3 + lab_w[None, :]).float()
    else:
        region = torch.zeros(h, w, device=device)
    win = window_partition(region[None, :, :, None], window_size)[..., 0]  # (nW, N)
    mask = (win[:, None, :] != win[:, :, None]).float() * MASK_VALUE
    if padded:
        pad = (rows[:, None] >= valid_h) | (cols[None, :] >= valid_w)
        pad = torch.roll(pad, shifts=(-shift_size, -shift_size), dims=(0, 1))
        pad_win = window_partition(pad[None, :, :, None].float(), window_size)[..., 0] > 0.5  # (nW, N)
        mask = mask.masked_fill(pad_win[:, None, :], MASK_VALUE)
    return mask


class Mlp(nn.Module):
    """``fc1 -> GELU -> dropout -> fc2 -> dropout`` (the official ``Mlp``)."""

    def __init__(self, in_features: int, hidden_features: int, drop: float = 0.0) -> None:
        super().__init__()
        self.fc1 = nn.Linear(in_features, hidden_features)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden_features, in_features)
        self.drop = nn.Dropout(drop)

    def forward(self, x: Tensor) -> Tensor:
        return self.drop(self.fc2(self.drop(self.act(self.fc1(x)))))


class WindowAttention(nn.Module):
    """Window multi-head self-attention with a learned relative position bias (official ``WindowAttention``).

    Shape: ``(B * nW, Wh*Ww, C)`` -> same; ``mask`` is ``(nW, N, N)`` additive or ``None``.
    """

    def __init__(self, dim: int, window_size: tuple[int, int], num_heads: int, qkv_bias: bool = True,
                 qk_scale: float | None = None, attn_drop: float = 0.0, proj_drop: float = 0.0) -> None:
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"dim {dim} is not divisible by num_heads {num_heads}")
        self.dim, self.window_size, self.num_heads = dim, tuple(window_size), num_heads
        self.scale = qk_scale or (dim // num_heads) ** -0.5
        wh, ww = self.window_size
        self.relative_position_bias_table = nn.Parameter(torch.zeros((2 * wh - 1) * (2 * ww - 1), num_heads))
        self.register_buffer("relative_position_index", relative_position_index(self.window_size))
        self.qkv = nn.Linear(dim, 3 * dim, bias=qkv_bias)
        self.attn_drop = nn.Dropout(attn_drop)
        self.proj = nn.Linear(dim, dim)
        self.proj_drop = nn.Dropout(proj_drop)
        nn.init.trunc_normal_(self.relative_position_bias_table, std=0.02)

    def forward(self, x: Tensor, mask: Tensor | None = None) -> Tensor:
        b_, n, c = x.shape
        qkv = self.qkv(x).reshape(b_, n, 3, self.num_heads, c // self.num_heads).permute(2, 0, 3, 1, 4)
        q, k, v = qkv[0], qkv[1], qkv[2]
        attn = (q * self.scale) @ k.transpose(-2, -1)  # (B_, nH, N, N)
        bias = self.relative_position_bias_table[self.relative_position_index.reshape(-1)].reshape(n, n, -1)
        attn = attn + bias.permute(2, 0, 1).unsqueeze(0)
        if mask is not None:
            nw = mask.shape[0]
            attn = attn.reshape(b_ // nw, nw, self.num_heads, n, n) + mask.to(attn.dtype)[None, :, None]
            attn = attn.reshape(b_, self.num_heads, n, n)
        attn = self.attn_drop(attn.softmax(dim=-1))
        x = (attn @ v).transpose(1, 2).reshape(b_, n, c)
        return self.proj_drop(self.proj(x))

    def extra_repr(self) -> str:
        return f"dim={self.dim}, window_size={self.window_size}, num_heads={self.num_heads}"


class SwinTransformerBlock(nn.Module):
    """Swin block: ``x + drop_path(W-MSA/SW-MSA(norm1(x)))``, then ``x + drop_path(MLP(norm2(x)))``.

    Args:
        dim: Channels.
        num_heads: Attention heads (must divide ``dim``).
        window_size: Window side.
        shift_size: Cyclic shift for SW-MSA (0 = W-MSA); must be ``< window_size``.
        mlp_ratio: MLP hidden width / ``dim``.
        qkv_bias, qk_scale, drop, attn_drop, drop_path: As the official block.
        input_resolution: ``(H, W)`` the block is built for. If given, the window shrinks to
            ``min(H, W)`` (and the shift is dropped) when ``min(H, W) <= window_size``, as the
            official block, and the shifted-window mask for that grid is precomputed.

    Shape:
        ``(B, H, W, C)`` -> ``(B, H, W, C)`` for any ``H``, ``W`` (see the module docstring).
    """

    def __init__(self, dim: int, num_heads: int, window_size: int = 7, shift_size: int = 0, mlp_ratio: float = 4.0,
                 qkv_bias: bool = True, qk_scale: float | None = None, drop: float = 0.0, attn_drop: float = 0.0,
                 drop_path: float = 0.0, input_resolution: Sequence[int] | None = None) -> None:
        super().__init__()
        self.dim, self.num_heads, self.mlp_ratio = dim, num_heads, mlp_ratio
        if input_resolution is not None and min(input_resolution) <= window_size:
            window_size, shift_size = int(min(input_resolution)), 0
        if not 0 <= shift_size < window_size:
            raise ValueError(f"shift_size must be in [0, window_size), got {shift_size} for window {window_size}")
        self.window_size, self.shift_size = int(window_size), int(shift_size)
        self.input_resolution = tuple(input_resolution) if input_resolution is not None else None

        self.norm1 = nn.LayerNorm(dim)
        self.attn = WindowAttention(dim, (self.window_size, self.window_size), num_heads, qkv_bias=qkv_bias,
                                    qk_scale=qk_scale, attn_drop=attn_drop, proj_drop=drop)
        self.drop_path = DropPath(drop_path) if drop_path > 0.0 else nn.Identity()
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = Mlp(dim, int(dim * mlp_ratio), drop=drop)

        mask = None
        if self.input_resolution is not None and self.shift_size > 0:
            h, w = self.input_resolution
            hp, wp = _round_up(h, self.window_size), _round_up(w, self.window_size)
            mask = shifted_window_mask(hp, wp, self.window_size, self.shift_size, valid_hw=(h, w))
        self.register_buffer("attn_mask", mask)

    def _mask_for(self, h: int, w: int, hp: int, wp: int, device) -> Tensor | None:
        if self.attn_mask is not None and self.input_resolution == (h, w):
            return self.attn_mask
        return shifted_window_mask(hp, wp, self.window_size, self.shift_size, valid_hw=(h, w), device=device)

    def forward(self, x: Tensor) -> Tensor:
        _b, h, w, _c = x.shape
        ws, s = self.window_size, self.shift_size
        hp, wp = _round_up(h, ws), _round_up(w, ws)
        shortcut = x
        x = self.norm1(x)
        if hp != h or wp != w:
            x = F.pad(x, (0, 0, 0, wp - w, 0, hp - h))
        if s > 0:
            x = torch.roll(x, shifts=(-s, -s), dims=(1, 2))
        x = self.attn(window_partition(x, ws), mask=self._mask_for(h, w, hp, wp, x.device))
        x = window_reverse(x, ws, hp, wp)
        if s > 0:
            x = torch.roll(x, shifts=(s, s), dims=(1, 2))
        if hp != h or wp != w:
            x = x[:, :h, :w].contiguous()
        x = shortcut + self.drop_path(x)
        return x + self.drop_path(self.mlp(self.norm2(x)))

    def extra_repr(self) -> str:
        return (f"dim={self.dim}, input_resolution={self.input_resolution}, num_heads={self.num_heads}, "
                f"window_size={self.window_size}, shift_size={self.shift_size}, mlp_ratio={self.mlp_ratio}")


def _round_up(n: int, m: int) -> int:
    # Non-negative operands only: traced for ONNX, integer division of negatives truncates instead of flooring.
    return (n + m - 1) // m * m
