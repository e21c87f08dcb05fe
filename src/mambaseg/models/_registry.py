"""Model registry: name -> variant function, with per-variant metadata.

A *variant function* builds one configuration of a model class; it is registered
with :func:`register_model` (bare or called with metadata) and built by name with
:func:`create_model`::

    @register_model(family="mamba_unet", paper="arXiv:2402.05079", spatial_dims=(2,),
                    default_cfg={"embed_dim": 96})
    def mamba_unet(**kwargs):
        return MambaUNet(**{"embed_dim": 96, **kwargs})

    model = create_model("mamba_unet", in_channels=1, num_classes=4)
"""

from __future__ import annotations

import difflib
import fnmatch
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Optional, Tuple

from torch import nn

__all__ = ["ModelInfo", "register_model", "create_model", "list_models", "model_info", "is_model"]


@dataclass(frozen=True)
class ModelInfo:
    """Metadata of a registered variant.

    Attributes:
        name: Registered name (the variant function's ``__name__``).
        family: Model family (e.g. ``"mamba_unet"``); defaults to ``name``.
        paper: Paper reference (e.g. ``"arXiv:2402.05079"``); ``""`` if undeclared.
        spatial_dims: Supported spatial dimensionalities, e.g. ``(2,)`` or ``(2, 3)``.
        default_cfg: The variant's default constructor arguments (a copy is returned
            by :func:`model_info`, so editing it changes nothing).
        fn: The variant function.
    """

    name: str
    family: str
    paper: str
    spatial_dims: Tuple[int, ...]
    default_cfg: Dict[str, Any] = field(default_factory=dict)
    fn: Optional[Callable[..., nn.Module]] = field(default=None, repr=False, compare=False)


_REGISTRY: Dict[str, ModelInfo] = {}


def register_model(fn: Optional[Callable[..., nn.Module]] = None, *, family: Optional[str] = None,
                   paper: str = "", spatial_dims: Tuple[int, ...] = (2,),
                   default_cfg: Optional[Dict[str, Any]] = None):
    """Register a variant function under its ``__name__``.

    Usable bare (``@register_model``) or called with metadata
    (``@register_model(family=..., paper=..., spatial_dims=(2,), default_cfg={...})``).

    Raises:
        ValueError: If the name is already registered.
    """

    def _register(f: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        name = f.__name__
        if name in _REGISTRY:
            raise ValueError(f"A model named {name!r} is already registered")
        _REGISTRY[name] = ModelInfo(name=name, family=family or name, paper=paper,
                                    spatial_dims=tuple(int(d) for d in spatial_dims),
                                    default_cfg=dict(default_cfg or {}), fn=f)
        return f

    return _register(fn) if fn is not None else _register


def _lookup(name: str) -> ModelInfo:
    if name not in _REGISTRY:
        names = sorted(_REGISTRY)
        close = difflib.get_close_matches(str(name), names, n=3, cutoff=0.5)
        hint = f" Did you mean {', '.join(repr(c) for c in close)}?" if close else ""
        raise ValueError(f"Unknown model {name!r}.{hint} Available models: {', '.join(names) or '(none)'}")
    return _REGISTRY[name]


def is_model(name: str) -> bool:
    """Whether ``name`` is a registered variant."""
    return name in _REGISTRY


def create_model(name: str, **kwargs: Any) -> nn.Module:
    """Build the registered variant ``name``.

    Keyword arguments whose value is ``None`` are dropped (so callers can forward
    optional CLI/config values); the rest go to the variant function, which passes
    them on to the model class and overrides its defaults.

    Raises:
        ValueError: Unknown name; the message lists close matches and all names.
    """
    info = _lookup(name)
    return info.fn(**{k: v for k, v in kwargs.items() if v is not None})


def list_models(pattern: Optional[str] = None) -> List[str]:
    """Sorted registered names, optionally filtered by an ``fnmatch`` pattern (e.g. ``"mamba_*"``)."""
    names = sorted(_REGISTRY)
    return [n for n in names if fnmatch.fnmatchcase(n, pattern)] if pattern else names


def model_info(name: str) -> ModelInfo:
    """Metadata of the variant ``name`` (:class:`ModelInfo`, with a copy of its default config)."""
    info = _lookup(name)
    return ModelInfo(info.name, info.family, info.paper, info.spatial_dims, dict(info.default_cfg), info.fn)
