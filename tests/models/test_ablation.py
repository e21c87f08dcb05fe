"""Ablations as settings: ``create_model(..., scan=...)`` on SS2D models and ``ablation="no-mamba"``.

Whether a model runs a selective scan is observed, not declared: its forward runs inside
``use_backend(counter)``, a stand-in backend that counts its calls and delegates to the chunked scan.
A tiny variant whose forward scans is a Mamba model and must lose every scan under ``"no-mamba"``;
one that does not scan must refuse the ablation. New models are covered as soon as they are registered.
"""

from __future__ import annotations

import io

import pytest
import torch

from mambaseg import create_model, list_models, model_info
from mambaseg.blocks import SS2D
from mambaseg.models.ablation import IdentityMixer, is_ssm_mixer
from mambaseg.ops.scan_orders import get_scan_order, list_scan_orders
from mambaseg.ops.selective_scan import selective_scan, use_backend

TINY = [name for name in list_models() if name.endswith("_test")]
ODD_SIZE = {2: (37, 45), 3: (9, 11, 13)}
ORDERS_2D = [n for n in list_scan_orders() if get_scan_order(n).spatial_dims == 2]


class ScanCounter:
    """A selective-scan backend that counts its calls and computes with the chunked backend."""

    def __init__(self) -> None:
        self.calls = 0

    def __call__(self, u, delta, A, B, C, **kwargs):
        self.calls += 1
        return selective_scan(u, delta, A, B, C, backend="chunked", **kwargs)


def dims_of(name: str) -> int:
    return min(model_info(name).spatial_dims)


def build(name: str, **kwargs) -> torch.nn.Module:
    dims = dims_of(name)
    if len(model_info(name).spatial_dims) > 1:
        kwargs["spatial_dims"] = dims
    torch.manual_seed(0)
    return create_model(name, in_channels=1, num_classes=2, **kwargs)


def as_list(out):
    return list(out) if isinstance(out, (list, tuple)) else [out]


def run(model: torch.nn.Module, x: torch.Tensor):
    """Forward under the counting backend; returns (outputs as a list, number of scan calls)."""
    counter = ScanCounter()
    with use_backend(counter):
        out = as_list(model(x))
    return out, counter.calls


def n_params(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def mixer_parameters(model: torch.nn.Module) -> int:
    """Distinct parameters that live inside any marked mixer (nested or shared mixers counted once)."""
    ids = {id(p): p.numel() for m in model.modules() if is_ssm_mixer(m) for p in m.parameters()}
    return sum(ids.values())


@pytest.mark.parametrize("name", TINY)
def test_no_mamba_removes_every_scan(name):
    dims = dims_of(name)
    x = torch.randn(1, 1, *ODD_SIZE[dims])
    try:
        model = build(name).train()
    except ImportError as err:  # a model whose optional dependency is not installed
        pytest.skip(str(err))
    with torch.no_grad():
        ref_out, ref_calls = run(model, x)
    if ref_calls == 0:  # not a Mamba model: the ablation must refuse it
        with pytest.raises(ValueError, match="no SSM mixer"):
            build(name, ablation="no-mamba")
        return

    ablated = build(name, ablation="no-mamba").train()
    out, calls = run(ablated, x)
    assert calls == 0, f"{name}: {calls} selective-scan calls left after no-mamba"
    assert [o.shape for o in out] == [o.shape for o in ref_out]
    assert all(torch.isfinite(o).all() for o in out)
    sum(o.float().square().mean() for o in out).backward()
    unused = getattr(ablated, "unused_parameter_suffixes", ())
    for pname, p in ablated.named_parameters():
        if not pname.endswith(unused):
            assert p.grad is not None and torch.isfinite(p.grad).all(), f"{name}: no finite gradient for {pname}"

    report = ablated.ablation_report
    before, after = n_params(model), n_params(ablated)
    assert after < before
    assert (report.parameters_before, report.parameters_after) == (before, after)
    assert report.parameters_removed == before - after == mixer_parameters(model)
    stand_ins = {id(m) for m in ablated.modules() if isinstance(m, IdentityMixer)}
    assert report.modules_replaced == len(stand_ins) == sum(report.replaced_classes.values()) > 0
    assert not any(is_ssm_mixer(m) for m in ablated.modules())
    assert report.as_dict()["ablation"] == "no-mamba"


def test_no_mamba_on_a_model_without_mamba_raises():
    with pytest.raises(ValueError, match=r"'unet_test'.*no SSM mixer"):
        create_model("unet_test", in_channels=1, num_classes=2, ablation="no-mamba")


def test_unknown_ablation_raises():
    with pytest.raises(ValueError, match="unknown ablation.*no-mamba"):
        create_model("vm_unet_test", ablation="no-ssm")


def test_no_mamba_model_exports_to_onnx():
    ort = pytest.importorskip("onnxruntime", reason="onnxruntime is not installed (pip install mambaseg[test])")
    model = build("vm_unet_test", ablation="no-mamba").eval()
    x = torch.randn(1, 1, 32, 32)
    buffer = io.BytesIO()
    with torch.no_grad():
        want = model(x)
        torch.onnx.export(model, (x,), buffer, dynamo=False, opset_version=17)
    session = ort.InferenceSession(buffer.getvalue())
    got = session.run(None, {session.get_inputs()[0].name: x.numpy()})[0]
    torch.testing.assert_close(torch.from_numpy(got), want, rtol=1e-4, atol=1e-4)


def per_direction_parameters(ss2d: SS2D) -> int:
    """Parameters of one scan direction of an SS2D: x_proj, dt_proj weight and bias, A_log rows, D."""
    d, r, n = ss2d.d_inner, ss2d.dt_rank, ss2d.d_state
    return (r + 2 * n) * d + d * r + d + d * n + d


@pytest.mark.parametrize("order", ORDERS_2D)
@pytest.mark.parametrize("name", ["vm_unet_test", "swin_umamba_d_test"])
def test_every_2d_order_builds_and_trains_at_odd_size(name, order):
    default = build(name)
    model = build(name, scan=order).train()
    ss2ds = [m for m in model.modules() if isinstance(m, SS2D)]
    k = get_scan_order(order).num_directions
    assert ss2ds and all(m.scan == order and m.num_directions == k for m in ss2ds)
    assert all(m.x_proj_weight.shape[0] == k and m.A_logs.shape[0] == k * m.d_inner for m in ss2ds)
    assert n_params(model) == n_params(default) + (k - 4) * sum(per_direction_parameters(m) for m in ss2ds)
    x = torch.randn(1, 1, *ODD_SIZE[2])
    out, calls = run(model, x)
    assert calls == len(ss2ds)
    assert out[0].shape == (1, 2, *ODD_SIZE[2]) and torch.isfinite(out[0]).all()
    sum(o.square().mean() for o in out).backward()
    assert all(m.x_proj_weight.grad is not None for m in ss2ds)


def test_default_scan_is_the_official_cross_order():
    for name in ["vm_unet_test", "mamba_unet_test", "swin_umamba_test", "swin_umamba_d_test", "h_vmunet_test"]:
        default, explicit = build(name), build(name, scan="cross")
        assert n_params(default) == n_params(explicit)
        assert all(m.scan == "cross" and m.num_directions == 4 for m in default.modules() if isinstance(m, SS2D))
        torch.testing.assert_close(default.state_dict(), explicit.state_dict(), rtol=0, atol=0)


def test_local_window_option_reaches_every_ss2d():
    model = build("h_vmunet_test", scan="local", scan_options={"window": 3})
    orders = {id(m.scan_order): m.scan_order for m in model.modules() if isinstance(m, SS2D)}
    assert len(orders) == 1  # one order object, shared
    (order,) = orders.values()
    assert order.name == "local" and order.window == 3
    # window 3 on a 5x4 grid: the first tile is rows 0-2 x columns 0-2, so direction 0 starts 0, 1, 2, 4, 5, 6
    assert order.permutations((5, 4))[0, :6].tolist() == [0, 1, 2, 4, 5, 6]
    out, calls = run(model.eval(), torch.randn(1, 1, *ODD_SIZE[2]))
    assert calls > 0 and torch.isfinite(out[0]).all()


@pytest.mark.parametrize("kwargs, message", [
    ({"scan": "spiral"}, r"unknown scan order scan='spiral'.*raster"),
    ({"scan": "tri"}, r"3D order but the model is 2D"),
    ({"scan": "cross", "scan_options": {"window": 3}}, r"takes no options"),
    ({"scan": "local", "scan_options": {"window": 0}}, r"window must be a positive int"),
    ({"scan": 4}, r"scan must be a scan order name"),
])
def test_bad_scan_settings_raise(kwargs, message):
    with pytest.raises(ValueError, match=message):
        create_model("vm_unet_test", **kwargs)


def test_scan_on_a_model_without_ss2d_names_the_models_that_take_it():
    with pytest.raises(ValueError, match=r"'unet_test' has no scan order.*vm_unet") as err:
        create_model("unet_test", scan="snake")
    accepted = str(err.value).split("accepted by: ")[1].split(", ")
    assert {"vm_unet", "mamba_unet", "swin_umamba", "swin_umamba_d", "h_vmunet"} <= set(accepted)
