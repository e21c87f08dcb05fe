"""One contract for every registered model, checked on each family's tiny ``*_test`` variant.

Shape (B, num_classes, *spatial) for 1 and 3 input channels at odd sizes; a finite gradient on every parameter;
eval mode deterministic; export through ``torch.onnx`` with onnxruntime matching PyTorch within 1e-4.
Full-size variants are checked against the official parameter counts in each model's own test file.
"""

from __future__ import annotations

import io
import os

import pytest
import torch

from mambaseg import create_model, list_models, model_info

TINY = [name for name in list_models() if name.endswith("_test")]
ODD_SIZE = {2: (37, 45), 3: (17, 20, 23)}
SMALL_SIZE = {2: (32, 32), 3: (16, 16, 16)}


def cases():
    return [pytest.param(name, dims, id=f"{name}-{dims}d") for name in TINY for dims in model_info(name).spatial_dims]


def build(name, dims, in_channels, num_classes=3):
    kwargs = {"in_channels": in_channels, "num_classes": num_classes}
    if len(model_info(name).spatial_dims) > 1:
        kwargs["spatial_dims"] = dims
    torch.manual_seed(0)
    return create_model(name, **kwargs)


def full_resolution(out):
    """Deep supervision returns a list, highest resolution first."""
    return out[0] if isinstance(out, (list, tuple)) else out


def test_every_family_has_a_tiny_variant():
    families = {model_info(n).family for n in list_models()}
    tested = {model_info(n).family for n in TINY}
    assert families == tested, f"families without a *_test variant: {sorted(families - tested)}"


@pytest.mark.parametrize("name, dims", cases())
@pytest.mark.parametrize("in_channels", [1, 3])
def test_shape_at_odd_sizes(name, dims, in_channels):
    model = build(name, dims, in_channels).eval()
    x = torch.randn(2, in_channels, *ODD_SIZE[dims])
    with torch.no_grad():
        out = full_resolution(model(x))
    assert out.shape == (2, 3, *ODD_SIZE[dims])
    assert torch.isfinite(out).all()


@pytest.mark.parametrize("name, dims", cases())
def test_backward_reaches_every_parameter(name, dims):
    model = build(name, dims, 1).train()
    if hasattr(model, "deep_supervision"):
        model.deep_supervision = True  # otherwise the lower-resolution heads are unused by design (as nnU-Net's)
    out = model(torch.randn(2, 1, *ODD_SIZE[dims]))
    loss = sum(o.float().square().mean() for o in out) if isinstance(out, (list, tuple)) else out.square().mean()
    loss.backward()
    unused = tuple(getattr(model, "unused_parameter_suffixes", ()))  # declared parity-only parameters
    missing = [n for n, p in model.named_parameters() if p.grad is None and not n.endswith(unused or ("\0",))]
    assert not missing, f"no gradient for {missing[:5]}"
    declared = [n for n, p in model.named_parameters() if unused and n.endswith(unused)]
    assert all(dict(model.named_parameters())[n].grad is None for n in declared), "a declared-unused one is used"
    bad = [n for n, p in model.named_parameters() if p.grad is not None and not torch.isfinite(p.grad).all()]
    assert not bad, f"non-finite gradient for {bad[:5]}"


@pytest.mark.parametrize("name, dims", cases())
def test_eval_is_deterministic(name, dims):
    model = build(name, dims, 1).eval()
    x = torch.randn(1, 1, *SMALL_SIZE[dims])
    with torch.no_grad():
        assert torch.equal(full_resolution(model(x)), full_resolution(model(x)))


ONNX_SIZE = {2: (16, 16), 3: (8, 8, 8)}


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore::torch.jit.TracerWarning")  # size-dependent padding is traced as constant
@pytest.mark.parametrize("name, dims", cases())
def test_onnx_export_matches_pytorch(name, dims):
    """Export traces the reference scan, unrolled over the sequence: minutes for 3D models on 2 cores."""
    if dims == 3 and os.environ.get("MAMBASEG_TEST_ONNX_3D") != "1":
        pytest.skip("3D ONNX export unrolls the scan over every voxel (minutes on CPU); set MAMBASEG_TEST_ONNX_3D=1")
    ort = pytest.importorskip("onnxruntime", reason="onnxruntime is not installed (pip install mambaseg[test])")
    model = build(name, dims, 1).eval()
    x = torch.randn(1, 1, *ONNX_SIZE[dims])
    buffer = io.BytesIO()
    with torch.no_grad():
        want = full_resolution(model(x))
        torch.onnx.export(model, (x,), buffer, dynamo=False, opset_version=17)
    session = ort.InferenceSession(buffer.getvalue())
    got = session.run(None, {session.get_inputs()[0].name: x.numpy()})[0]
    torch.testing.assert_close(torch.from_numpy(got), want, rtol=1e-4, atol=1e-4)
