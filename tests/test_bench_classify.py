"""bench/bench_classify.py: leave-one-out folders, held-out scores, the no-image reference and reuse checks."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import pytest

from bench.bench_classify import finished_run, heldout_scores, loo_value, prior_scores, subset_folder, train
from core.landcover.patches import PatchSet, load_patches

CLASSIFICATION = Path("classification")


def patch_set(y: np.ndarray, classes: tuple[str, ...], multi_label: bool) -> PatchSet:
    n = len(y)
    return PatchSet(x=np.zeros((n, 1, 4, 4), np.float32), valid=np.ones((n, 4, 4), bool), y=y, bands=("B02",),
                    classes=classes, multi_label=multi_label, layout="eurosat", sources=("a",) * n, eight_bit=False)


def test_prior_scores_are_class_frequencies_in_the_other_patches() -> None:
    y = np.array([[1, 0, 0], [1, 1, 0], [0, 1, 0], [1, 0, 1]], dtype=np.float32)  # (N, K)
    prior = prior_scores(patch_set(y, ("a", "b", "c"), True))
    np.testing.assert_allclose(prior, [[2 / 3, 2 / 3, 1 / 3], [2 / 3, 1 / 3, 1 / 3], [1, 1 / 3, 1 / 3],
                                       [2 / 3, 2 / 3, 0]])
    assert loo_value(patch_set(y, ("a", "b", "c"), True), y) == 1.0  # scores equal to the truth rank perfectly


def test_loo_value_single_label_is_accuracy() -> None:
    scores = np.array([[0.9, 0.1], [0.2, 0.8], [0.6, 0.4], [0.3, 0.7]])  # (N, K)
    assert loo_value(patch_set(np.array([0, 1, 1, 1]), ("a", "b"), False), scores) == 0.75


def test_a_reused_run_with_another_encoder_is_refused(tmp_path) -> None:
    (tmp_path / "config.json").write_text(json.dumps({"provenance": {"encoder": None}, "train": {"epochs": 20}}))
    args = argparse.Namespace(epochs=20)
    assert finished_run(tmp_path, None, args)["train"]["epochs"] == 20
    with pytest.raises(SystemExit, match="choose another --out"):
        finished_run(tmp_path, Path("runs/other-encoder"), args)
    with pytest.raises(SystemExit, match="choose another --out"):
        finished_run(tmp_path, None, argparse.Namespace(epochs=5))


@pytest.mark.realdata
def test_leave_one_out_on_the_real_ms_and_bigearthnet_samples(shared_data, tmp_path) -> None:
    ms = load_patches(shared_data / CLASSIFICATION / "eurosat_small" / "ms_6")
    subset = load_patches(subset_folder(ms, np.arange(1, 6), tmp_path / "ms"))
    assert len(ms) == 6 and len(subset) == 5 and subset.bands == ms.bands and subset.classes == ms.classes
    assert subset.class_counts().tolist() == [2, 3]  # the left-out patch is AnnualCrop_1
    ben = load_patches(shared_data / CLASSIFICATION / "BigEarthNet-S2-Example")
    alone = [k for k in range(len(ben.classes)) if ben.y[:, k].sum() == 1]  # classes of a single patch
    fold = int(np.flatnonzero(ben.y[:, alone[0]])[0])
    data = subset_folder(ben, np.setdiff1d(np.arange(len(ben)), [fold]), tmp_path / "ben")
    run = tmp_path / "run"
    train(data, run, None, True, 0, 0.0, argparse.Namespace(epochs=1, device="cpu"))
    scores = heldout_scores(run, ben, fold)  # (K,)
    unseen = [k for k in alone if ben.y[fold, k]]
    assert scores.shape == (len(ben.classes),) and (scores[unseen] == 0).all()  # never trained on: scored 0
    seen = np.setdiff1d(np.arange(len(ben.classes)), unseen)
    assert ((scores[seen] > 0) & (scores[seen] < 1)).all()  # sigmoid of every class the model knows
