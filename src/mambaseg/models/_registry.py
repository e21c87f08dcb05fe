"""Model registry: name -> variant function, with per-variant metadata.

A *variant function* builds one configuration of a model class; it is registered
with :func:`register_model` (bare or called with metadata) and built by name with
:func:`create_model`::

    @register_model(family="mamba_unet", paper="arXiv:2402.05079", spatial_dims=(2,),
                    default_cfg={"embed_dim": 96})
    def mamba_unet(**kwargs):
        return MambaUNet(**{"embed_dim": 96, **kwargs})

    model = create_model("mamba_unet", in_channels=1, num_classes=4)

Two settings work on every model that has the matching parts (ablations as settings, not code paths):

* ``scan=`` / ``scan_options=``: the token order of every SS2D (a :mod:`mambaseg.ops.scan_orders` name, e.g.
  ``create_model("vm_unet", scan="snake")``; an order with options as
  ``scan="local", scan_options={"window": 4}``). Accepted by the variants whose ``default_cfg`` has a
  ``"scan"`` entry; any other model raises :class:`ValueError`.
* ``ablation="no-mamba"``: the model with every SSM mixer replaced by an identity
  (:mod:`mambaseg.models.ablation`).
"""

from __future__ import annotations

import difflib
import fnmatch
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Optional, Tuple

from torch import nn

from mambaseg.models.ablation import ABLATIONS, apply_ablation
from mambaseg.ops.scan_orders import ScanOrder, get_scan_order, list_scan_orders

__all__ = ["ModelInfo", "register_model", "create_model", "list_models", "model_info", "is_model", "scan_models"]


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


def scan_models() -> List[str]:
    """Registered variants that accept ``scan=`` (their ``default_cfg`` has a ``"scan"`` entry)."""
    return sorted(n for n, info in _REGISTRY.items() if "scan" in info.default_cfg)


def _resolve_scan(info: ModelInfo, scan: Any, scan_options: Optional[Dict[str, Any]]) -> Any:
    """Check ``scan``/``scan_options`` for the variant ``info``; return the value to pass as ``scan``.

    A name without options is passed on unchanged (the model builds its own order); with options, one
    :class:`~mambaseg.ops.scan_orders.ScanOrder` object is built here and shared by all of the model's scans.
    """
    if "scan" not in info.default_cfg:
        raise ValueError(f"create_model: model {info.name!r} has no scan order to set (scan={scan!r}, "
                         f"scan_options={scan_options!r}); scan= is accepted by: {', '.join(scan_models())}")
    if scan is None:
        scan = info.default_cfg["scan"]
    if isinstance(scan, ScanOrder):
        if scan_options:
            raise ValueError(f"create_model({info.name!r}): scan_options={scan_options!r} needs scan to be an "
                             f"order name, got the order object {scan!r}")
        order = scan
    elif isinstance(scan, str):
        if scan not in list_scan_orders():
            raise ValueError(f"create_model({info.name!r}): unknown scan order scan={scan!r}; "
                             f"valid names: {', '.join(list_scan_orders())}")
        if scan_options is not None and not isinstance(scan_options, dict):
            raise ValueError(f"create_model({info.name!r}): scan_options must be a dict such as "
                             f"{{'window': 7}}, got {scan_options!r}")
        try:
            order = get_scan_order(scan, **(scan_options or {}))
        except TypeError as err:  # an option the order does not take
            raise ValueError(f"create_model({info.name!r}): scan_options={scan_options!r}: {err}") from None
    else:
        raise ValueError(f"create_model({info.name!r}): scan must be a scan order name or a ScanOrder, "
                         f"got {type(scan).__name__} {scan!r}")
    if order.spatial_dims not in info.spatial_dims:
        raise ValueError(f"create_model({info.name!r}): scan={order.name!r} is a {order.spatial_dims}D order but "
                         f"the model is {'/'.join(map(str, info.spatial_dims))}D")
    return order if scan_options else scan


def create_model(name: str, *, scan: Any = None, scan_options: Optional[Dict[str, Any]] = None,
                 ablation: Optional[str] = None, **kwargs: Any) -> nn.Module:
    """Build the registered variant ``name``.

    Keyword arguments whose value is ``None`` are dropped (so callers can forward
    optional CLI/config values); the rest go to the variant function, which passes
    them on to the model class and overrides its defaults.

    Args:
        name: A registered variant (:func:`list_models`).
        scan: Scan order of every SS2D (a :func:`~mambaseg.ops.scan_orders.list_scan_orders` name, or a
            :class:`~mambaseg.ops.scan_orders.ScanOrder`); ``None``: the variant's own (``"cross"``, VMamba's).
            Only for variants listed by :func:`scan_models`.
        scan_options: Options of the order, e.g. ``{"window": 4}`` for ``scan="local"`` (default window 7).
        ablation: ``"no-mamba"``: replace every SSM mixer by an identity and record
            ``model.ablation_report`` (:func:`mambaseg.models.ablation.apply_ablation`); ``None``: none.
        **kwargs: Constructor arguments of the model.

    Raises:
        ValueError: Unknown name (the message lists close matches and all names); ``scan``/``scan_options``
            on a model without a scan order, an unknown order or option; an unknown ablation, or
            ``"no-mamba"`` on a model without an SSM mixer.
    """
    info = _lookup(name)
    if ablation is not None and ablation not in ABLATIONS:
        raise ValueError(f"create_model({name!r}): unknown ablation={ablation!r}; choose one of {list(ABLATIONS)}")
    if scan is not None or scan_options is not None:
        kwargs["scan"] = _resolve_scan(info, scan, scan_options)
    model = info.fn(**{k: v for k, v in kwargs.items() if v is not None})
    if ablation is not None:
        apply_ablation(model, ablation, model_name=name)
    return model


def list_models(pattern: Optional[str] = None) -> List[str]:
    """Sorted registered names, optionally filtered by an ``fnmatch`` pattern (e.g. ``"mamba_*"``)."""
    names = sorted(_REGISTRY)
    return [n for n in names if fnmatch.fnmatchcase(n, pattern)] if pattern else names


def model_info(name: str) -> ModelInfo:
    """Metadata of the variant ``name`` (:class:`ModelInfo`, with a copy of its default config)."""
    info = _lookup(name)
    return ModelInfo(info.name, info.family, info.paper, info.spatial_dims, dict(info.default_cfg), info.fn)


def create_model_for_plan(name: str, plan: Any, model_kwargs: Optional[Dict[str, Any]] = None,
                          deep_supervision: Any = None) -> nn.Module:
    """Build ``name`` for a training plan: the one rule shared by training and prediction.

    ``in_channels`` / ``num_classes`` come from the plan's channels and classes; models of several dimensionalities
    get the plan's ``spatial_dims``; models sized by their input (``input_size="auto"``, e.g. U-Mamba Enc) get the
    plan's patch size, and models with an ``img_size`` (the Swin / VMamba families, whose window sizes follow it) get
    it when the patch is square; ``deep_supervision`` ``None``/``"auto"`` turns it on where the model has it.
    Explicit ``model_kwargs`` win over all of these. Rebuilding a run's model from its ``plan.json`` and
    ``config.yaml`` with this function gives the same architecture, so its checkpoints load.

    Args:
        name: registered model name.
        plan: a :class:`mambaseg.data.plan.Plan` (only ``channel_names``, ``num_classes``, ``spatial_dims`` and
            ``patch_size`` are read).
        model_kwargs: extra keyword arguments for :func:`create_model`.
        deep_supervision: ``None``/``"auto"`` (on where supported), True or False.
    """
    info = model_info(name)
    kw = dict(model_kwargs or {})
    if len(info.spatial_dims) > 1:
        kw.setdefault("spatial_dims", plan.spatial_dims)
    if info.default_cfg.get("input_size") == "auto":
        kw.setdefault("input_size", list(plan.patch_size))
    if "img_size" in info.default_cfg and len(set(plan.patch_size)) == 1:
        kw.setdefault("img_size", plan.patch_size[0])
    if "deep_supervision" in info.default_cfg:
        kw.setdefault("deep_supervision", True if deep_supervision in ("auto", None) else bool(deep_supervision))
    kw.setdefault("in_channels", len(plan.channel_names))
    kw.setdefault("num_classes", plan.num_classes)
    return create_model(name, **kw)
