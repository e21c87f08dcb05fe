"""Architecture ablations as settings: ``create_model(name, ablation="no-mamba")``.

Paper followed:
    F. Isensee, T. Wald, C. Ulrich, M. Baumgartner, S. Roy, K. Maier-Hein, P. F. Jaeger, "nnU-Net
    Revisited: A Call for Rigorous Validation in 3D Medical Image Segmentation", arXiv:2404.09556. Its
    "No-Mamba Base" trains U-Mamba with the Mamba layers taken out, i.e. the residual-encoder U-Net that
    remains; it matches U-Mamba on all six datasets (numbers in ``reference/papers.md``), so the Mamba layer
    was not what made U-Mamba good. ``"no-mamba"`` makes the same test available for every Mamba model here.

What "the SSM mixer" is (the decision, per mixer class). A module is a mixer when its class sets the
class attribute ``ssm_mixer = True``; :func:`apply_ablation` walks the model from the root and replaces
the *outermost* marked modules by an :class:`IdentityMixer` (same input and output, no parameters); the
modules around a mixer stay as they are.

* :class:`mambaseg.blocks.MambaLayer` (U-Mamba Bot/Enc, and its channel-token subclass): the whole layer,
  ``LayerNorm`` + ``Mamba``. It has no residual and sits alone between the encoder stages, so removing it
  entirely is exactly nnU-Net Revisited's "No-Mamba Base" (keeping its LayerNorm would leave a
  normalisation that the no-Mamba network does not have).
* :class:`mambaseg.blocks.Mamba` (the mamba_ssm block: ``in_proj``, causal ``conv1d``, ``x_proj``,
  ``dt_proj``, selective scan with gate, ``out_proj``) wherever it sits inside a layer of its own model:
  LightM-UNet's ``LightMambaLayer`` becomes ``proj(LN(LN(x) + skip_scale * x))`` and UltraLight VM-UNet's
  ``PVMLayer`` ``proj(LN(cat_g(LN(x)_g + skip_scale * LN(x)_g)))``: their norms, scaled skips and output
  projections (which change the width) are not part of Mamba and stay.
* :class:`mambaseg.blocks.SS2D` (VMamba's token mixer, the counterpart of attention in a ViT block: its own
  ``in_proj``, depthwise conv, K-direction scan, ``out_norm``, gate and ``out_proj``): the VSS block
  becomes ``x + drop_path(ln_1(x))`` (Mamba-UNet, VM-UNet, Swin-UMamba(-D)); in H-vmunet every SS2D of
  the H-SS2D (``ss2d_in``, ``ss2d_k`` and the SS2D half of ``Local_SS2D``) becomes the identity and the
  gnconv-style products, 1x1 convs, depthwise conv and the MLP stay.

A new mixer class (e.g. SegMamba's) joins by setting ``ssm_mixer = True``; a subclass that is *not* a
mixer sets ``ssm_mixer = False``. A shared mixer (one module called several times, as in the PVM layer) is
replaced by one shared stand-in. The numbers removed are stored on the model as ``model.ablation_report``
(an :class:`AblationReport`; ``as_dict()`` for JSON) and logged at INFO level.
"""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import asdict, dataclass, field
from typing import Any, Dict, Optional

from torch import Tensor, nn

__all__ = ["ABLATIONS", "AblationReport", "IdentityMixer", "apply_ablation", "is_ssm_mixer", "remove_ssm_mixers"]

logger = logging.getLogger(__name__)

#: Ablation names accepted by :func:`apply_ablation` (and ``create_model(..., ablation=...)``).
ABLATIONS = ("no-mamba",)


def is_ssm_mixer(module: nn.Module) -> bool:
    """Whether ``module``'s class is marked as an SSM mixer (class attribute ``ssm_mixer = True``)."""
    return getattr(type(module), "ssm_mixer", False) is True


class IdentityMixer(nn.Module):
    """Stand-in for a removed SSM mixer: returns its first input unchanged (no ONNX node at all).

    Further arguments of the mixer's call (e.g. SegMamba's ``nslices=``) are accepted and ignored.

    Args:
        replaced: Class name of the module it stands in for (shown in ``repr``).
        num_parameters: Parameters of the module it replaced (shown in ``repr``).

    Shape: any tensor -> the same tensor.
    """

    def __init__(self, replaced: str, num_parameters: int) -> None:
        super().__init__()
        self.replaced = replaced
        self.num_parameters = int(num_parameters)

    def forward(self, x: Tensor, *args: Any, **kwargs: Any) -> Tensor:
        return x

    def extra_repr(self) -> str:
        return f"replaced={self.replaced}, num_parameters={self.num_parameters}"


@dataclass(frozen=True)
class AblationReport:
    """What an ablation changed.

    Attributes:
        ablation: Its name (``"no-mamba"``).
        modules_replaced: Distinct mixer modules replaced by :class:`IdentityMixer`.
        parameters_before: Distinct parameters of the model before.
        parameters_after: Distinct parameters after.
        parameters_removed: ``parameters_before - parameters_after``.
        replaced_classes: Count of replaced modules per class name.
    """

    ablation: str
    modules_replaced: int
    parameters_before: int
    parameters_after: int
    parameters_removed: int
    replaced_classes: Dict[str, int] = field(default_factory=dict)

    def as_dict(self) -> dict:
        """Plain ``dict`` (JSON-serialisable), e.g. for benchmark efficiency files."""
        return asdict(self)


def _count_parameters(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())  # parameters() yields each shared tensor once


def remove_ssm_mixers(model: nn.Module) -> Dict[str, int]:
    """Replace, in place, every outermost SSM mixer of ``model`` by an :class:`IdentityMixer`.

    Returns:
        Count of replaced (distinct) modules per class name; empty when ``model`` has no mixer. A model that
        is itself a mixer is not replaced (there is no parent to put the stand-in into).
    """
    stand_ins: Dict[int, IdentityMixer] = {}  # id(mixer) -> its stand-in, so shared mixers stay shared
    counts: Counter = Counter()

    def visit(parent: nn.Module) -> None:
        for name, child in list(parent.named_children()):
            if is_ssm_mixer(child):
                key = id(child)
                if key not in stand_ins:
                    stand_ins[key] = IdentityMixer(type(child).__name__, _count_parameters(child))
                    counts[type(child).__name__] += 1
                setattr(parent, name, stand_ins[key])
            elif not isinstance(child, IdentityMixer):
                visit(child)

    visit(model)
    return dict(counts)


def apply_ablation(model: nn.Module, ablation: str, model_name: Optional[str] = None) -> nn.Module:
    """Apply the named ablation to ``model`` in place and record an :class:`AblationReport`.

    Args:
        model: A built model.
        ablation: One of :data:`ABLATIONS`.
        model_name: Registered name, used in messages only.

    Returns:
        ``model`` (the same object), with ``model.ablation_report`` set.

    Raises:
        ValueError: Unknown ``ablation``, or ``"no-mamba"`` on a model without any SSM mixer.
    """
    if ablation not in ABLATIONS:
        raise ValueError(f"ablation={ablation!r} is unknown; choose one of {list(ABLATIONS)}")
    label = f"model {model_name!r} ({type(model).__name__})" if model_name else f"model {type(model).__name__}"
    before = _count_parameters(model)
    replaced = remove_ssm_mixers(model)
    if not replaced:
        raise ValueError(
            f"ablation={ablation!r}: {label} has no SSM mixer to remove (no submodule whose class sets "
            f"ssm_mixer = True, such as Mamba, MambaLayer or SS2D); it applies to Mamba models only")
    after = _count_parameters(model)
    report = AblationReport(ablation=ablation, modules_replaced=sum(replaced.values()), parameters_before=before,
                            parameters_after=after, parameters_removed=before - after, replaced_classes=replaced)
    model.ablation_report = report
    logger.info("ablation %r on %s: replaced %d SSM mixer modules (%s) by identities, removed %d of %d parameters",
                ablation, label, report.modules_replaced, replaced, report.parameters_removed, before)
    return model
