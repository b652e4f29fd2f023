"""The unlabelled pre-training scenes in ../shared/data, shared by the demo, the default model and the ablation."""

from __future__ import annotations

from pathlib import Path

TIME_SERIES = ("boadella_s2l2a_12dates", "jaca_s2l2a_4dates")


def unlabelled_scenes(data: Path) -> list[str]:
    """The 10 unlabelled OSCD cities and the multi-date L2A series, as ``swimdiff pretrain --data`` entries."""
    oscd = data / "oscd"
    cities = (oscd / "unlabelled_cities.txt").read_text().strip().split(",")
    scenes = [str(oscd / "images" / c.strip()) for c in cities if (oscd / "images" / c.strip()).is_dir()]
    scenes += [str(data / "multitemporal" / s) for s in TIME_SERIES if (data / "multitemporal" / s).is_dir()]
    return scenes
