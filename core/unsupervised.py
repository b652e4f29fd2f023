"""Change scores without labels: change vector analysis (CVA) and Otsu's automatic threshold."""

from __future__ import annotations

import numpy as np


def standardise(x: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """Z-score every band of (C, H, W) over its valid pixels (each date on its own scale)."""
    values = x[:, valid]  # (C, n_valid)
    mean = values.mean(axis=1)[:, None, None]
    std = values.std(axis=1)[:, None, None]
    return (x - mean) / np.where(std > 1e-6, std, 1.0)


def cva_magnitude(x1: np.ndarray, x2: np.ndarray) -> np.ndarray:
    """Length of the change vector between two standardised (C, H, W) stacks -> (H, W)."""
    return np.sqrt(((x2 - x1) ** 2).sum(axis=0))


def cva_change(x1: np.ndarray, x2: np.ndarray, valid: np.ndarray) -> tuple[np.ndarray, float]:
    """Classic CVA of two (C, H, W) stacks: the (H, W) magnitude and its Otsu threshold over valid pixels."""
    magnitude = cva_magnitude(standardise(x1, valid), standardise(x2, valid))  # (H, W)
    return magnitude, otsu_threshold(magnitude[valid])


def otsu_threshold(values: np.ndarray, bins: int = 256) -> float:
    """The threshold that maximises the between-class variance of ``values`` (Otsu, 1979)."""
    values = values[np.isfinite(values)]
    hist, edges = np.histogram(values, bins=bins)
    return otsu_from_histogram(hist, edges)


def otsu_from_histogram(hist: np.ndarray, edges: np.ndarray) -> float:
    """Otsu's threshold from a histogram (so it can be accumulated tile by tile)."""
    centres = (edges[:-1] + edges[1:]) / 2
    weight = hist.astype(np.float64)
    w0 = np.cumsum(weight)  # pixels at or below each bin
    w1 = w0[-1] - w0
    m0 = np.cumsum(weight * centres) / np.maximum(w0, 1e-12)
    m1 = (np.sum(weight * centres) - np.cumsum(weight * centres)) / np.maximum(w1, 1e-12)
    between = w0 * w1 * (m0 - m1) ** 2
    return float(edges[int(np.argmax(between[:-1])) + 1])
