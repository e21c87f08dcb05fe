"""Swin-UNet: a pure-Transformer U-Net (the baseline Mamba-UNet is compared against).

Paper:
    H. Cao, Y. Wang, J. Chen, D. Jiang, X. Zhang, Q. Tian, M. Wang, "Swin-Unet: Unet-like Pure
    Transformer for Medical Image Segmentation", arXiv:2105.05537. Mamba-UNet (arXiv:2402.05079)
    trains it as its Transformer baseline on ACDC.

Official code (read at HuCaoFighting/Swin-Unet 1c8b3e8, not copied):
``networks/swin_transformer_unet_skip_expand_decoder_sys.py`` (``SwinTransformerSys``,
``BasicLayer``, ``BasicLayer_up``, ``PatchEmbed``, ``PatchMerging``, ``PatchExpand``,
``FinalPatchExpand_X4``), ``networks/vision_transformer.py`` (``SwinUnet``, the wrapper) and
``configs/swin_tiny_patch4_window7_224_lite.yaml``. The Swin block is
:class:`mambaseg.blocks.swin.SwinTransformerBlock`. Mamba-UNet is this skeleton with the Swin
blocks replaced by VSS blocks, so the skeleton modules (patch embedding, merging, expanding,
final x4 expanding) are those of :mod:`mambaseg.models.mamba_unet`, whose parameter names and
layouts match the official Swin-UNet ones.

Configuration followed (``create_model("swin_unet", in_channels=3, num_classes=4)``, the
official ACDC setting of the yaml above): img 224, patch 4, embed_dim 96, depths (2, 2, 2, 2),
num_heads (3, 6, 12, 24), window 7, mlp_ratio 4, qkv_bias True, drop_path_rate 0.2 (yaml
``DROP_PATH_RATE``; the class default is 0.1), dropout 0, ape False, patch_norm True;
27,168,420 parameters. That count was obtained by instantiating a faithful scratch transcription
of the official ``SwinTransformerSys`` (deleted afterwards, not part of this repository) and
cross-checked with a by-hand count (see ``tests/models/test_swin_unet.py``); the state-dict keys and
shapes of this model equal the official ones (``attn_mask`` buffers included at 224).

Decoder depths: the official ``SwinTransformerSys`` has a ``depths_decoder`` argument (default
``[1, 2, 2, 2]``; the yaml says ``DECODER_DEPTHS: [2, 2, 2, 1]``) but never uses it: each decoder
stage takes ``depths`` of the encoder stage at its resolution, and ``SwinUnet`` does not even pass
it. Here ``depths_decoder=None`` reproduces that (the count above); a sequence gives the number of
blocks of the decoder stage at each encoder resolution (same indexing as ``depths``; entry 0 is
the highest resolution, the last entry is unused because the bottleneck has no decoder stage).
Stochastic depth: ``linspace(0, drop_path_rate, sum(depths))`` over the encoder; each decoder
stage reuses the rates of the encoder stage at its resolution (official); with custom decoder
depths the decoder uses its own ``linspace`` over ``sum(depths_decoder)``.

Module names mirror ``SwinTransformerSys``: ``patch_embed``, ``layers`` (Swin stages with
``blocks`` and ``downsample``), ``layers_up`` (``layers_up.0`` is a PatchExpand alone, then Swin
stages with ``upsample`` except the last), ``concat_back_dim``, ``norm``, ``norm_up``, ``up``,
``output``. Blocks alternate W-MSA / SW-MSA (shift ``window // 2``), and a stage whose grid at
``img_size`` is not larger than the window uses window = grid and no shift (official rule: at 224
the 7x7 bottleneck has two unshifted blocks).

Deliberate differences:
    * No channel repetition: the official ``SwinUnet.forward`` repeats a 1-channel input to 3
      channels; here ``in_channels`` goes straight to the patch embedding.
    * Any input size: H, W are padded (replicate) to multiples of ``patch_size * 2**(len(depths)-1)``
      and the logits cropped back (as :class:`~mambaseg.models.mamba_unet.MambaUNet`); inside each
      Swin block the grid is zero-padded to a multiple of the window with padded keys masked out
      (see :mod:`mambaseg.blocks.swin`). At ``img_size`` (224) nothing is padded and the
      computation is the official one. ``img_size`` only fixes the per-stage window/shift rule
      and the precomputed masks; the official model only accepts ``img_size`` inputs.
    * Blocks work channel-last ``(B, H, W, C)`` instead of ``(B, H*W, C)`` (no parameter change).
    * ``ape`` (absolute position embedding, off in the official config), ``qk_scale``,
      ``drop_rate``/``attn_drop_rate`` (0 in the config) and checkpointing are not arguments.
    * ``spatial_dims`` must be 2.
"""

from __future__ import annotations

from collections.abc import Sequence

from mambaseg.blocks.swin import SwinTransformerBlock
from mambaseg.layers import stage_drop_path_rates
from mambaseg.models._registry import register_model
from mambaseg.models.mamba_unet import ResolutionStage, SwinUNetShape

__all__ = ["SwinStage", "SwinUNet"]


class SwinStage(ResolutionStage):
    """``depth`` Swin blocks (W-MSA, SW-MSA, ...), then an optional resampler (official ``BasicLayer`` /
    ``BasicLayer_up``).

    Shape: ``(B, H, W, C)`` -> ``(B, H, W, C)`` or the resampler's output shape.
    """

    def __init__(self, dim: int, depth: int, num_heads: int, window_size: int, mlp_ratio: float,
                 drop_path: Sequence[float], input_resolution: Sequence[int], qkv_bias: bool = True,
                 downsample: bool = False, upsample: bool = False) -> None:
        super().__init__((SwinTransformerBlock(dim, num_heads, window_size=window_size,
                                               shift_size=0 if i % 2 == 0 else window_size // 2,
                                               mlp_ratio=mlp_ratio, qkv_bias=qkv_bias, drop_path=drop_path[i],
                                               input_resolution=input_resolution)
                          for i in range(depth)), dim, downsample, upsample)


class SwinUNet(SwinUNetShape):
    """Swin-UNet (official ``SwinTransformerSys``) for 2D segmentation.

    Args:
        in_channels: Input channels (used directly by the patch embedding).
        num_classes: Output channels (logits).
        spatial_dims: Must be 2.
        img_size: Reference input side: fixes each stage's grid for the window-shrinking rule and the
            precomputed shifted-window masks. Other sizes work too (padding, see the module docstring).
        patch_size: Patch-embedding stride (and final expanding factor).
        embed_dim: Width of the first stage; stage ``i`` has ``embed_dim * 2**i``.
        depths: Swin blocks per encoder stage.
        depths_decoder: Swin blocks of the decoder stage at each encoder resolution; ``None`` = ``depths``
            (what the official code actually does).
        num_heads: Attention heads per stage (decoder stages use those of their resolution).
        window_size: Attention window side.
        mlp_ratio: MLP hidden width / channels.
        drop_path_rate: Maximum stochastic-depth rate (linear schedule).
        qkv_bias: Bias in the qkv projections.
        patch_norm: LayerNorm after the patch embedding.

    Shape:
        Input ``(B, in_channels, H, W)`` of any size, output logits ``(B, num_classes, H, W)``.
    """

    def __init__(self, in_channels: int, num_classes: int, spatial_dims: int = 2, img_size: int = 224,
                 patch_size: int = 4, embed_dim: int = 96, depths: Sequence[int] = (2, 2, 2, 2),
                 depths_decoder: Sequence[int] | None = None, num_heads: Sequence[int] = (3, 6, 12, 24),
                 window_size: int = 7, mlp_ratio: float = 4.0, drop_path_rate: float = 0.2,
                 qkv_bias: bool = True, patch_norm: bool = True) -> None:
        super().__init__()
        depths = self._stage_depths("SwinUNet", spatial_dims, depths)
        n = len(depths)
        num_heads = tuple(int(h) for h in num_heads)
        if len(num_heads) != n:
            raise ValueError(f"num_heads needs {n} entries, got {num_heads}")
        dec = depths if depths_decoder is None else tuple(int(d) for d in depths_decoder)
        if len(dec) != n:
            raise ValueError(f"depths_decoder needs {n} entries, got {dec}")
        dims = [embed_dim * 2 ** i for i in range(n)]
        grid = img_size // patch_size
        res = [(grid // 2 ** i, grid // 2 ** i) for i in range(n)]
        rates = stage_drop_path_rates(drop_path_rate, depths)
        rates_dec = rates if dec == depths else stage_drop_path_rates(drop_path_rate, dec)
        common = {"window_size": window_size, "mlp_ratio": mlp_ratio, "qkv_bias": qkv_bias}

        def stage(i: int, decoder: bool) -> SwinStage:  # decoder stages use the heads of their resolution
            if decoder:
                return SwinStage(dims[i], dec[i], num_heads[i], drop_path=rates_dec[i], input_resolution=res[i],
                                 upsample=i > 0, **common)
            return SwinStage(dims[i], depths[i], num_heads[i], drop_path=rates[i], input_resolution=res[i],
                             downsample=i < n - 1, **common)

        # The relative-position tables keep their trunc-normal(0.02) init (SwinUNetShape._init_weights touches
        # Linear and LayerNorm only, as SwinTransformerSys._init_weights).
        self._build(in_channels, num_classes, patch_size, embed_dim, n, patch_norm, stage)


_ACDC_CFG = {"img_size": 224, "patch_size": 4, "embed_dim": 96, "depths": (2, 2, 2, 2), "depths_decoder": None,
                 "num_heads": (3, 6, 12, 24), "window_size": 7, "mlp_ratio": 4.0, "drop_path_rate": 0.2}
_TEST_CFG = {"img_size": 224, "patch_size": 4, "embed_dim": 12, "depths": (1, 1, 1, 1), "depths_decoder": None,
                 "num_heads": (1, 1, 2, 2), "window_size": 4, "mlp_ratio": 4.0, "drop_path_rate": 0.1}


@register_model(family="swin_unet", paper="arXiv:2105.05537", spatial_dims=(2,), default_cfg=_ACDC_CFG)
def swin_unet(**kwargs) -> SwinUNet:
    """Swin-UNet, official ACDC configuration of Mamba-UNet's baseline (27,168,420 parameters for 3 -> 4)."""
    return SwinUNet(**{**_ACDC_CFG, **kwargs})


@register_model(family="swin_unet", paper="arXiv:2105.05537", spatial_dims=(2,), default_cfg=_TEST_CFG)
def swin_unet_test(**kwargs) -> SwinUNet:
    """Tiny Swin-UNet for tests (embed_dim 12, depths (1, 1, 1, 1), heads (1, 1, 2, 2), window 4)."""
    return SwinUNet(**{**_TEST_CFG, **kwargs})
