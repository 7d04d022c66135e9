"""Examples from the examples mart: the images read back from the lake by their keys, decoded
and resized once as the edge will (``compression.preprocessing``), split by the mart's stable
split column."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pandas as pd

from cityfactory.compression import preprocessing
from cityfactory.tasktypes.base import Examples
from cityfactory.tasktypes.image_classification.spec import ImageDataSpec

PARTS = ("train", "validation", "test")


def load_pixels(keys: list[str], size: int, mode: str) -> np.ndarray:
    """The images of ``keys`` from the lake, as one (n, channels, size, size) uint8 array."""
    from cityfactory.storage.lake import open_lake

    lake = open_lake()
    with ThreadPoolExecutor(max_workers=4) as pool:  # Pillow decodes with the GIL released
        arrays = list(pool.map(lambda key: preprocessing.pixels(lake.get_bytes(key), mode, size), keys))
    channels = 1 if mode == "L" else 3
    return np.stack(arrays) if arrays else np.zeros((0, channels, size, size), dtype=np.uint8)


def class_index(labels: pd.Series, classes: list[str]) -> np.ndarray:
    index = pd.Index(classes).get_indexer(labels.to_numpy())
    if (index < 0).any():
        unknown = sorted(set(labels[index < 0].astype(str)))
        raise ValueError(f"labels {unknown} are not among the declared classes {classes}")
    return index.astype(np.int64)


def examples(frame: pd.DataFrame, data: ImageDataSpec) -> Examples:
    """The usable (labelled) rows split by the mart's split column, in a stable order (time, key)."""
    usable = frame[frame[data.usable].astype(bool)].sort_values([data.time_column, data.image_key], kind="stable")
    parts = {name: usable[usable[data.split] == name] for name in PARTS}
    for name, part in parts.items():
        if part.empty:
            raise ValueError(f"the {name} split is empty: {len(usable)} labelled images of {len(frame)}")
    x = {name: preprocessing.as_inputs(load_pixels(part[data.image_key].tolist(), data.size, data.mode)) for name, part in parts.items()}
    y = {name: class_index(part[data.label], data.classes) for name, part in parts.items()}
    spans = {name: f"{part[data.time_column].min()} .. {part[data.time_column].max()}" for name, part in parts.items()}
    shares = {f"{name}_images": len(part) for name, part in parts.items()}
    shares["class_balance"] = "; ".join(
        f"{name} " + " / ".join(f"{int((y[name] == k).sum())} {label}" for k, label in enumerate(data.classes))
        for name in PARTS)
    test_start = pd.Timestamp(parts["test"][data.time_column].min())
    return Examples(parts["train"], parts["validation"], parts["test"], x["train"], y["train"], x["validation"],
                    y["validation"], x["test"], y["test"], test_start, spans, shares)
