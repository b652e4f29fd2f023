"""The stable-cover figure (bench/cv_figure.py): error colours and the rules a fold chose."""

from __future__ import annotations

import numpy as np

from bench.cv_figure import BANDS, COLOURS, errors_rgb, ruled_prediction


def test_errors_are_coloured_by_kind() -> None:
    prediction = np.array([[True, True, False, False, True]])
    label = np.array([[1, 0, 1, 0, 255]], dtype=np.uint8)
    rgb = errors_rgb(prediction, label)
    assert np.allclose(rgb[0, 0], COLOURS["hit"]) and np.allclose(rgb[0, 1], COLOURS["false alarm"])
    assert np.allclose(rgb[0, 2], COLOURS["miss"]) and rgb[0, 3].tolist() == [0, 0, 0]
    assert np.allclose(rgb[0, 4], 0.3)  # unlabelled


def test_the_fold_rule_zeroes_the_stable_cover_before_the_threshold() -> None:
    x = np.full((len(BANDS), 1, 3), 1000.0, dtype=np.float32)
    x[BANDS.index("B03"), 0, 1], x[BANDS.index("B11"), 0, 1] = 1200, 100  # water (MNDWI 0.85) at both dates
    x[BANDS.index("B08"), 0, 2] = 3000  # green (NDVI 0.5) at both dates
    prob = np.array([[0.9, 0.9, 0.9]], dtype=np.float32)
    assert ruled_prediction(prob, x, x, [None, None, 0.5]).tolist() == [[True, True, True]]
    assert ruled_prediction(prob, x, x, [0.15, None, 0.5]).tolist() == [[True, True, False]]
    assert ruled_prediction(prob, x, x, [0.15, 0.6, 0.5]).tolist() == [[True, False, False]]
    assert ruled_prediction(prob, x, x, [0.15, 0.6, 0.95]).tolist() == [[False, False, False]]
