"""The 3D workflow end to end on real BraTS 2015 volumes: convert -> plan (2 mm) -> train -> predict -> evaluate.

Budget (one CPU core, no other load): about 5 s converting, 30 s training ``unet_test`` in 3D for 100 iterations
(48^3 patches at 2 mm, batch 2, the 2 ``train`` cases of the source split), 25 s predicting the 2 test volumes and
1.5 s evaluating. Deliberate deviations from the nnU-Net preset, for a budget this short: Adam at lr 0.01 (the SGD
preset barely moves in 100 iterations), no augmentation, no validation during training (the ``val`` cases are not
preprocessed), prediction from ``checkpoint_latest.pt``.

Sliding window == whole-volume prediction on a 3D volume that fits one patch is covered by
``tests/inference/test_predictor.py::test_sliding_window_equals_whole_image_at_patch_size`` and not repeated here.
"""

from __future__ import annotations

import json
import logging

import numpy as np
import pytest

from mambaseg.data.convert_cases import convert_brats2015_deepmedic
from mambaseg.data.io import read_image
from mambaseg.data.plan import Plan
from mambaseg.evaluation.evaluate import evaluate_folders
from mambaseg.inference import compute_steps_for_sliding_window
from mambaseg.inference.predictor import Predictor
from mambaseg.training.trainer import CPU_ALLOCATOR_HINT, TrainConfig, memory_allocator, train

TARGET_SPACING = [2.0, 2.0, 2.0]
PATCH = [48, 48, 48]
WHOLE_TUMOUR = (1, 2, 3, 4)


def _dice(a: np.ndarray, b: np.ndarray) -> float:
    """Plain Dice of two boolean masks: the slow, obvious reference."""
    inter = np.count_nonzero(a & b)
    return 2.0 * inter / (np.count_nonzero(a) + np.count_nonzero(b))


@pytest.mark.slow
def test_brats_3d_train_predict_evaluate_beats_chance(shared_data, tmp_path, caplog):
    raw = convert_brats2015_deepmedic(shared_data("brats2015_deepmedic"), tmp_path / "raw")
    splits = json.loads((raw / "splits.json").read_text())

    cfg = TrainConfig(data=str(raw), model="unet_test", out=str(tmp_path / "run"), model_kwargs={"spatial_dims": 3},
                      target_spacing=TARGET_SPACING, patch_size=PATCH, batch_size=2, iterations=100, val_every=100,
                      val_max_cases=0, optimizer="adam", lr=0.01, augmentation=False, device="cpu", seed=0,
                      progress=False)
    with caplog.at_level(logging.INFO, logger="mambaseg.training"):
        result = train(cfg)
    run = result.run_dir
    allocator = json.loads((run / "environment.json").read_text())["memory_allocator"]
    assert allocator == memory_allocator() != "unknown"  # recorded: it sets the pace of 3D CPU training
    assert (CPU_ALLOCATOR_HINT in caplog.messages) == (allocator == "glibc")  # the jemalloc tip, only where it helps
    assert result.iterations == 100 and (run / "checkpoint_latest.pt").is_file()
    plan = Plan.load(run / "plan.json")  # the plan used, recorded in the run folder
    assert plan.spatial_dims == 3 and plan.slice_axis is None and plan.num_classes == 5
    assert plan.target_spacing == TARGET_SPACING and plan.patch_size == PATCH and plan.batch_size == 2
    assert plan.extra["memory_budget_gb"] > 0 and plan.extra["rules"]["target_spacing"].startswith("given")
    assert plan.normalization == ["none", "none"]  # channels named noNorm: already z-scored inside the brain
    assert json.loads((run / "splits.json").read_text())["train"] == splits["train"]

    predictor = Predictor.from_run(run, checkpoint="latest", device="cpu")
    tiles = []
    predictor.model.register_forward_pre_hook(lambda module, args: tiles.append(tuple(args[0].shape)))
    written = predictor.predict_files(raw / "imagesTs", tmp_path / "pred", progress=False)
    assert [p.name for p in written] == [f"{c}.nii.gz" for c in splits["test"]]
    resampled = [round(155 / 2), round(240 / 2), round(240 / 2)]  # 1 mm -> 2 mm
    per_case_tiles = int(np.prod([len(s) for s in compute_steps_for_sliding_window(resampled, PATCH, 0.5)]))
    assert per_case_tiles > 1 and tiles == [(1, 2, *PATCH)] * (per_case_tiles * len(written))

    summary = evaluate_folders(tmp_path / "pred", raw / "labelsTs", labels={"whole tumour": WHOLE_TUMOUR},
                               out=tmp_path / "eval")
    dice = {r["case_id"]: r["dice"] for r in summary["metric_per_case"]}
    rng = np.random.default_rng(0)
    for case, pred_file in zip(splits["test"], written):
        image_file = raw / "imagesTs" / f"{case}_0000.nii.gz"
        pred, pred_meta = read_image(pred_file)
        _, image_meta = read_image(image_file)
        ref, _ = read_image(raw / "labelsTs" / f"{case}.nii.gz")
        assert pred.shape == ref.shape == (155, 240, 240)  # written back on the input grid
        np.testing.assert_allclose(pred_meta.spacing, image_meta.spacing, rtol=1e-7)
        np.testing.assert_allclose(pred_meta.origin, image_meta.origin, atol=1e-6)
        np.testing.assert_allclose(pred_meta.direction, image_meta.direction, atol=1e-7)
        assert set(np.unique(pred).tolist()) <= {0, 1, 2, 3, 4}
        truth = np.isin(ref, WHOLE_TUMOUR)
        model_dice = _dice(np.isin(pred, WHOLE_TUMOUR), truth)
        assert dice[case] == pytest.approx(model_dice, abs=1e-9)  # evaluate_folders agrees with the reference
        # chance baselines: every brain voxel called tumour; random labels drawn with the tumour frequency
        brain, _ = read_image(image_file.resolve().parent / "brainmask.nii.gz")
        brain_dice = _dice(brain > 0, truth)
        random_dice = _dice(rng.random(truth.shape) < truth.mean(), truth)
        assert random_dice < brain_dice < 0.2
        assert model_dice > brain_dice + 0.25, (case, model_dice, brain_dice)
    assert np.mean(list(dice.values())) > 0.4
