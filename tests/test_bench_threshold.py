"""The threshold/ensemble diagnostic (bench/threshold_ceiling.py) on a generated OSCD root."""

from __future__ import annotations

import json

import pytest

from bench.threshold_ceiling import main
from conftest import make_oscd
from core.cli import main as swimdiff


def test_best_threshold_bounds_the_validated_one_and_an_ensemble_of_twins_equals_one(tmp_path, capsys) -> None:
    root = make_oscd(tmp_path / "oscd", cities=("alpha", "beta"))
    model = tmp_path / "change"
    assert swimdiff(["finetune-change", "--data", str(root), "--out", str(model), "--cities", "alpha",
                     "--val-cities", "beta", "--steps", "4", "--batch-size", "2", "--patch-size", "32",
                     "--eval-every", "2"]) == 0
    out = tmp_path / "ceiling.json"
    result = main([str(model), str(model), "--data", str(root), "--cities", "beta", "--json", str(out)])
    single = result["models"][0]
    assert result["models"][1] == single
    assert 0.0 <= single["f1"] <= single["best_f1"] <= 1.0 and 0 < single["threshold"] < 1
    assert result["ensemble"]["best_f1"] == pytest.approx(single["best_f1"])
    assert json.loads(out.read_text()) == result
    assert "average of 2 models" in capsys.readouterr().out
