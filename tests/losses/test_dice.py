"""Soft Dice / Dice+CE / deep supervision against slow references, transcriptions of the official
losses (nnU-Net v2, SSL4MIS, VM-UNet) and MONAI's DiceCELoss."""

from __future__ import annotations

import itertools

import pytest
import torch
import torch.nn.functional as F

from mambaseg.losses import (
    DeepSupervisionLoss,
    DiceCELoss,
    downsample_target,
    nnunet_deep_supervision_weights,
    soft_dice_loss,
)


def _data(b=2, c=4, spatial=(9, 11), seed=0, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn((b, c, *spatial), generator=g, dtype=dtype)
    target = torch.randint(0, c, (b, *spatial), generator=g)
    return logits, target


def _slow_dice(logits, target, include_background, batch_dice, smooth_nr, smooth_dr, squared):
    """Obvious loop reference: one Dice per (sample, class) or per class over the batch."""
    probs = torch.softmax(logits, 1)
    b, c = logits.shape[:2]
    classes = range(0 if include_background else 1, c)
    groups = [list(range(b))] if batch_dice else [[i] for i in range(b)]
    losses = []
    for samples in groups:
        for k in classes:
            inter = sp = sg = 0.0
            for i in samples:
                p = probs[i, k].flatten().tolist()
                t = (target[i] == k).flatten().tolist()
                for pv, tv in zip(p, t):
                    inter += pv * tv
                    sp += pv * pv if squared else pv
                    sg += float(tv)
            losses.append(1 - (2 * inter + smooth_nr) / (sp + sg + smooth_dr))
    return sum(losses) / len(losses)


@pytest.mark.parametrize("include_background,batch_dice,squared",
                         list(itertools.product([True, False], [True, False], [True, False])))
def test_soft_dice_matches_slow_reference(include_background, batch_dice, squared):
    logits, target = _data()
    got = soft_dice_loss(logits, target, include_background=include_background, batch_dice=batch_dice,
                         smooth_nr=1e-5, smooth_dr=2e-5, squared=squared)
    ref = _slow_dice(logits, target, include_background, batch_dice, 1e-5, 2e-5, squared)
    assert abs(got.item() - ref) < 1e-12


def test_target_layouts_agree():
    logits, target = _data(dtype=torch.float32)
    onehot = F.one_hot(target, 4).movedim(-1, 1).float()
    a = soft_dice_loss(logits, target)
    b = soft_dice_loss(logits, target[:, None])
    c = soft_dice_loss(logits, onehot)
    d = soft_dice_loss(logits, target.float())
    torch.testing.assert_close(a, b, rtol=0, atol=0)
    torch.testing.assert_close(a, c, rtol=1e-6, atol=1e-7)
    torch.testing.assert_close(a, d, rtol=0, atol=0)
    with pytest.raises(ValueError):
        soft_dice_loss(logits, target[:, :5])


@pytest.mark.parametrize("include_background,batch,squared",
                         list(itertools.product([True, False], [True, False], [True, False])))
def test_matches_monai_dicece(include_background, batch, squared):
    """Same definitions when MONAI gets to_onehot_y + softmax and equal smooth terms.

    Tolerance (float64 inputs): 1e-10; 1e-7 with squared terms, where MONAI 1.6 builds the one-hot
    target in float32 and gets sum(g^2) as vector_norm(g, 2)^2 (a float32 sqrt round trip).
    """
    monai_losses = pytest.importorskip("monai.losses")
    logits, target = _data(spatial=(6, 7, 5))
    ref = monai_losses.DiceCELoss(to_onehot_y=True, softmax=True, include_background=include_background,
                                  squared_pred=squared, smooth_nr=1e-5, smooth_dr=1e-5, batch=batch)
    ours = DiceCELoss(1.0, 1.0, include_background=include_background, batch_dice=batch, squared=squared)
    tol = 1e-7 if squared else 1e-10
    torch.testing.assert_close(ours(logits, target[:, None]), ref(logits, target[:, None]), rtol=tol, atol=tol)


def _nnunet_memory_efficient_dice(x, y, batch_dice, do_bg=False, smooth=1e-5):
    """Transcription of nnU-Net v2 MemoryEfficientSoftDiceLoss.forward (softmax, no loss mask, no DDP)."""
    x = torch.softmax(x, 1)
    if not do_bg:
        x = x[:, 1:]
    axes = list(range(2, x.ndim))
    y_onehot = torch.zeros((x.shape[0], x.shape[1] + (0 if do_bg else 1), *x.shape[2:]), dtype=torch.bool)
    y_onehot.scatter_(1, y[:, None].long(), 1)
    if not do_bg:
        y_onehot = y_onehot[:, 1:]
    sum_gt = y_onehot.sum(axes)
    intersect = (x * y_onehot).sum(axes)
    sum_pred = x.sum(axes)
    if batch_dice:
        intersect, sum_pred, sum_gt = intersect.sum(0), sum_pred.sum(0), sum_gt.sum(0)
    dc = (2 * intersect + smooth) / torch.clip(sum_gt + sum_pred + smooth, 1e-8)
    return -dc.mean()


@pytest.mark.parametrize("batch_dice", [False, True])
def test_nnunet_preset_matches_transcription(batch_dice):
    logits, target = _data(b=3, c=3, spatial=(5, 6, 7))
    loss = DiceCELoss.nnunet(batch_dice=batch_dice)
    ref = F.cross_entropy(logits, target) + _nnunet_memory_efficient_dice(logits, target, batch_dice)
    # nnU-Net returns -dice, we return 1 - dice: a constant offset of 1.
    torch.testing.assert_close(loss(logits, target[:, None]) - 1.0, ref, rtol=1e-12, atol=1e-12)


def _ssl4mis_dice_loss(inputs_soft, target, n_classes):
    """Transcription of SSL4MIS code/utils/losses.py DiceLoss.forward (softmax applied by the caller)."""
    target = torch.cat([target == i for i in range(n_classes)], dim=1).float()  # target is (B, 1, H, W)
    loss = 0.0
    for i in range(n_classes):
        score, t = inputs_soft[:, i], target[:, i]
        smooth = 1e-5
        intersect = torch.sum(score * t)
        y_sum = torch.sum(t * t)
        z_sum = torch.sum(score * score)
        loss += 1 - (2 * intersect + smooth) / (z_sum + y_sum + smooth)
    return loss / n_classes


def test_ssl4mis_preset_matches_mamba_unet_training_loss():
    logits, target = _data(b=3, c=4, spatial=(16, 12))
    # Mamba-UNet train_fully_supervised_2D_VIM.py: loss = 0.5 * (loss_dice + loss_ce)
    ref = 0.5 * (_ssl4mis_dice_loss(torch.softmax(logits, 1), target[:, None], 4) + F.cross_entropy(logits, target))
    torch.testing.assert_close(DiceCELoss.ssl4mis()(logits, target), ref, rtol=1e-12, atol=1e-12)


def test_vmunet_binary_preset_matches_bce_dice():
    g = torch.Generator().manual_seed(3)
    logits = torch.randn((4, 1, 10, 9), generator=g, dtype=torch.float64)
    target = (torch.rand((4, 1, 10, 9), generator=g) > 0.6).double()
    # VM-UNet utils.py BceDiceLoss(wb=1, wd=1) on sigmoid outputs
    pred = torch.sigmoid(logits)
    p, t = pred.view(4, -1), target.view(4, -1)
    bce = F.binary_cross_entropy(p, t)
    dice = 1 - ((2 * (p * t).sum(1) + 1) / (p.sum(1) + t.sum(1) + 1)).sum() / 4
    torch.testing.assert_close(DiceCELoss.vmunet_binary()(logits, target.long()), bce + dice, rtol=1e-12, atol=1e-12)
    # a (B, *S) label target gives the same
    torch.testing.assert_close(DiceCELoss.vmunet_binary()(logits, target[:, 0]), bce + dice, rtol=1e-12, atol=1e-12)


def test_binary_soft_target_and_ignore():
    g = torch.Generator().manual_seed(5)
    logits = torch.randn((2, 1, 6, 5), generator=g, dtype=torch.float64)
    soft = torch.rand((2, 1, 6, 5), generator=g, dtype=torch.float64)
    p = torch.sigmoid(logits)
    ref = F.binary_cross_entropy(p, soft) + 1 - ((2 * (p * soft).sum((1, 2, 3)) + 1e-5)
                                                  / (p.sum((1, 2, 3)) + soft.sum((1, 2, 3)) + 1e-5)).mean()
    torch.testing.assert_close(DiceCELoss(include_background=True)(logits, soft), ref, rtol=1e-12, atol=1e-12)
    hard = (soft > 0.5).long()
    ignored = hard.clone()
    ignored[..., 4:] = 255
    loss = DiceCELoss(ignore_index=255)
    torch.testing.assert_close(loss(logits, ignored), DiceCELoss()(logits[..., :4], hard[..., :4]),
                               rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("loss", [DiceCELoss(), DiceCELoss.ssl4mis(), DiceCELoss(smooth_nr=0.0, smooth_dr=0.0)])
def test_gradient_finite_at_perfect_prediction_and_empty_class(loss):
    target = torch.zeros((2, 8, 8), dtype=torch.long)
    target[:, 2:5, 2:6] = 1  # class 2 and 3 absent everywhere (empty classes)
    logits = (F.one_hot(target, 4).movedim(-1, 1).float() * 1e4).requires_grad_(True)  # exact one-hot softmax
    value = loss(logits, target)
    value.backward()
    assert torch.isfinite(value) and torch.isfinite(logits.grad).all()
    if loss.smooth_nr == 1e-5 and not loss.include_background:
        assert value.item() == pytest.approx(0.0, abs=1e-6)  # present class perfect, empty classes -> (0+s)/(0+s)


def test_binary_gradient_finite_at_perfect_prediction():
    target = torch.zeros((2, 1, 6, 6))
    target[:, :, 1:3] = 1
    logits = ((target * 2 - 1) * 100).requires_grad_(True)
    value = DiceCELoss.vmunet_binary()(logits, target.long())
    value.backward()
    assert torch.isfinite(logits.grad).all() and value.item() == pytest.approx(0.0, abs=1e-6)


def test_ignore_index_equals_cropping_the_ignored_region():
    logits, target = _data(b=2, c=3, spatial=(8, 10))
    ignored = target.clone()
    ignored[..., 7:] = 255
    loss = DiceCELoss(1.0, 1.0, ignore_index=255)
    plain = DiceCELoss(1.0, 1.0)
    torch.testing.assert_close(loss(logits, ignored), plain(logits[..., :7], target[..., :7]), rtol=1e-12, atol=1e-12)
    all_ignored = torch.full_like(target, 255)
    assert torch.isfinite(loss(logits, all_ignored))


def test_deep_supervision_weights_as_nnunet():
    w = nnunet_deep_supervision_weights(5)
    assert w == pytest.approx([8 / 15, 4 / 15, 2 / 15, 1 / 15, 0.0])
    assert nnunet_deep_supervision_weights(1) == [1.0]


def test_downsample_target_nearest_exact():
    t = torch.arange(64).view(1, 8, 8)
    d = downsample_target(t, (4, 4))
    assert d.dtype == t.dtype
    assert torch.equal(d[0], t[0][1::2, 1::2])  # nearest-exact picks floor((i + 0.5) * 2) = 2i + 1
    assert downsample_target(t[:, None], (4, 4)).shape == (1, 1, 4, 4)
    assert downsample_target(t, (8, 8)) is t
    assert downsample_target(t, (4, 3)).shape == (1, 4, 3)


def test_deep_supervision_loss_sums_weighted_levels():
    logits, target = _data(b=2, c=3, spatial=(16, 12))
    outputs = [logits, logits[..., ::2, ::2].contiguous(), logits[..., ::4, ::4].contiguous()]
    base = DiceCELoss()
    ds = DeepSupervisionLoss(base)
    w = nnunet_deep_supervision_weights(3)
    ref = sum(wi * base(o, downsample_target(target, o.shape[2:])) for wi, o in zip(w, outputs))
    torch.testing.assert_close(ds(outputs, target), ref, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(ds(logits, target), base(logits, target))
    custom = DeepSupervisionLoss(base, weights=[1.0, 1.0, 1.0])
    ref_custom = sum(base(o, downsample_target(target, o.shape[2:])) for o in outputs)
    torch.testing.assert_close(custom(outputs, target[:, None]), ref_custom, rtol=1e-12, atol=1e-12)
    with pytest.raises(ValueError):
        DeepSupervisionLoss(base, weights=[1.0])(outputs, target)


def test_deep_supervision_every_head_gets_a_gradient():
    logits, target = _data(b=1, c=2, spatial=(8, 8), dtype=torch.float32)
    outs = [logits.clone().requires_grad_(True), logits[..., ::2, ::2].clone().requires_grad_(True)]
    DeepSupervisionLoss(DiceCELoss())(outs, target).backward()
    assert outs[0].grad is not None and outs[1].grad is not None  # last level has weight 0, still in the graph
