"""LR schedules against their closed forms, state_dict resume, seeding and DataLoader workers."""

from __future__ import annotations

import math
import random

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader, Dataset

from mambaseg.training import (
    PolyLR,
    WarmupCosineLR,
    load_checkpoint,
    poly_lr,
    save_checkpoint,
    seed_everything,
    warmup_cosine_lr,
    worker_init_fn,
)


def _opt(lr=0.01, groups=1):
    params = [torch.nn.Parameter(torch.zeros(1)) for _ in range(groups)]
    return torch.optim.SGD([{"params": [p], "lr": lr * (i + 1)} for i, p in enumerate(params)], momentum=0.9)


def _run(sched_fn, steps, opt=None):
    opt = opt or _opt()
    sched = sched_fn(opt)
    lrs = []
    for _ in range(steps):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    return lrs


def test_poly_matches_nnunet_closed_form():
    total = 50
    lrs = _run(lambda o: PolyLR(o, max_steps=total), total + 5)
    for t, lr in enumerate(lrs):
        expected = 0.01 * (1 - min(t, total) / total) ** 0.9  # nnU-Net PolyLRScheduler / SSL4MIS
        assert lr == pytest.approx(expected, rel=1e-12, abs=1e-15)
    assert lrs[0] == 0.01 and lrs[25] == pytest.approx(0.01 * 0.5 ** 0.9) and lrs[-1] == 0.0
    assert poly_lr(10, 1.0, 100, exponent=2.0) == pytest.approx(0.81)


def test_poly_per_param_group():
    opt = _opt(groups=2)
    sched = PolyLR(opt, max_steps=10)
    for _ in range(3):
        opt.step()
        sched.step()
    assert [g["lr"] for g in opt.param_groups] == pytest.approx([0.01 * 0.7 ** 0.9, 0.02 * 0.7 ** 0.9])


def test_cosine_without_warmup_matches_torch():
    total = 40
    ours = _run(lambda o: WarmupCosineLR(o, max_steps=total), total)
    ref = _run(lambda o: torch.optim.lr_scheduler.CosineAnnealingLR(o, T_max=total), total)
    assert ours == pytest.approx(ref, rel=1e-9, abs=1e-12)


def test_warmup_cosine_closed_form():
    total, warm, min_lr = 30, 5, 1e-4
    lrs = _run(lambda o: WarmupCosineLR(o, max_steps=total, warmup_steps=warm, min_lr=min_lr), total + 3)
    for t, lr in enumerate(lrs):
        if t < warm:
            expected = 0.01 * t / warm  # VM-UNet WP_CosineLR: epoch / warm_up_epochs
        else:
            progress = min((t - warm) / (total - warm), 1.0)
            expected = min_lr + (0.01 - min_lr) * 0.5 * (1 + math.cos(math.pi * progress))
        assert lr == pytest.approx(expected, rel=1e-12, abs=1e-15)
    assert lrs[warm] == pytest.approx(0.01) and lrs[-1] == pytest.approx(min_lr)
    assert warmup_cosine_lr(0, 1.0, 10, 4, warmup_start_factor=0.5) == 0.5
    with pytest.raises(ValueError):
        WarmupCosineLR(_opt(), max_steps=5, warmup_steps=5)


@pytest.mark.parametrize("make", [lambda o: PolyLR(o, max_steps=20),
                                  lambda o: WarmupCosineLR(o, max_steps=20, warmup_steps=4, min_lr=1e-5)])
def test_scheduler_state_dict_round_trip(make, tmp_path):
    straight = _run(make, 20)

    opt = _opt()
    sched = make(opt)
    lrs = []
    for _ in range(7):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    path = save_checkpoint(tmp_path / "c.pt", {"opt": opt.state_dict(), "sched": sched.state_dict()})

    ckpt = load_checkpoint(path)  # weights_only=True: scheduler state is plain data
    opt2 = _opt(lr=123.0)  # a different lr: must come back from the checkpoint
    sched2 = make(opt2)
    opt2.load_state_dict(ckpt["opt"])
    sched2.load_state_dict(ckpt["sched"])
    for _ in range(13):
        lrs.append(opt2.param_groups[0]["lr"])
        opt2.step()
        sched2.step()
    assert lrs == pytest.approx(straight, rel=1e-12, abs=1e-15)


def test_seed_everything_reproduces_draws():
    def draws():
        return random.random(), np.random.rand(), torch.rand(2).tolist()

    seed_everything(123)
    a = draws()
    seed_everything(123)
    assert draws() == a
    seed_everything(124)
    assert draws() != a


def test_seed_everything_deterministic_flags():
    before = (torch.are_deterministic_algorithms_enabled(), torch.backends.cudnn.deterministic,
              torch.backends.cudnn.benchmark)
    try:
        seed_everything(0, deterministic=True)
        assert torch.are_deterministic_algorithms_enabled()
        assert torch.backends.cudnn.deterministic and not torch.backends.cudnn.benchmark
    finally:
        torch.use_deterministic_algorithms(before[0])
        torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = before[1], before[2]


class _RandomDataset(Dataset):
    def __len__(self):
        return 4

    def __getitem__(self, i):
        return torch.tensor([np.random.rand(), random.random()], dtype=torch.float64)


def _epoch(seed):
    seed_everything(seed)
    loader = DataLoader(_RandomDataset(), batch_size=1, num_workers=2, worker_init_fn=worker_init_fn)
    return torch.cat(list(loader)).tolist()


@pytest.mark.filterwarnings("ignore:This DataLoader will create:UserWarning")
def test_worker_init_fn_distinct_and_reproducible():
    a = _epoch(7)
    assert _epoch(7) == a
    # the two workers draw different streams (items 0 and 1 come from different workers)
    assert a[0] != a[1]


def test_worker_init_fn_seeds_from_torch_initial_seed():
    torch.manual_seed(42)
    worker_init_fn(0)
    x = (random.random(), np.random.rand())
    torch.manual_seed(42)
    worker_init_fn(1)
    assert (random.random(), np.random.rand()) == x
