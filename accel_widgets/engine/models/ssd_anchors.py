"""SSD300-VGG anchor boxes, laid out as the Azure service's model had them.

Layout (MISSION.md): six feature maps with grids 37/19/10/5/3/1 and 4/6/6/6/4/4 anchors per
cell, 8,432 anchors in all. The paper's SSD300 has a 38x38 first map (8,732 anchors); the
Azure model's VGG-16 kept Keras' ``valid`` 2x2 pooling for pools 1-3 (300 -> 150 -> 75 -> 37)
and pooled block 4 with ``same`` padding (37 -> 19), and we follow it so that the 12 raw
tensors have the original shapes.

Sizes, ratios and steps are SSD300's (Liu et al. 2016; the SSD-TensorFlow port the Azure
model came from): per cell one square box of ``size_min``, one of ``sqrt(size_min *
size_max)``, then one per aspect ratio ``r`` of ``size_min / sqrt(r)`` tall and ``size_min *
sqrt(r)`` wide. Centres are ``(index + 0.5) * step / 300``. Every anchor is a (cy, cx, h, w)
fraction of the image; the order is feature map, then row, then column, then anchor, the
order of the raw tensors ``[1, H, W, A, ...]`` flattened.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

IMAGE_SIZE = 300
#: The six feature maps: the layer they come from, grid, box sizes (pixels), ratios, step.
BLOCKS = ("block4", "block7", "block8", "block9", "block10", "block11")
GRIDS = (37, 19, 10, 5, 3, 1)
SIZES = ((21.0, 45.0), (45.0, 99.0), (99.0, 153.0), (153.0, 207.0), (207.0, 261.0), (261.0, 315.0))
RATIOS = (
    (2.0, 0.5),
    (2.0, 0.5, 3.0, 1.0 / 3.0),
    (2.0, 0.5, 3.0, 1.0 / 3.0),
    (2.0, 0.5, 3.0, 1.0 / 3.0),
    (2.0, 0.5),
    (2.0, 0.5),
)
STEPS = (8, 16, 32, 64, 100, 300)
OFFSET = 0.5
#: Box-encoding variances for (cy, cx, h, w) offsets: 0.1 for centres, 0.2 for log sizes.
VARIANCES = (0.1, 0.1, 0.2, 0.2)


@dataclass(frozen=True)
class FeatureMap:
    """One of the six maps: its name, grid side and anchors per cell."""

    block: str
    grid: int
    anchors_per_cell: int

    @property
    def num_anchors(self) -> int:
        return self.grid * self.grid * self.anchors_per_cell


FEATURE_MAPS = tuple(
    FeatureMap(block, grid, 2 + len(ratios))
    for block, grid, ratios in zip(BLOCKS, GRIDS, RATIOS, strict=True)
)
NUM_ANCHORS = sum(m.num_anchors for m in FEATURE_MAPS)


def cell_shapes(index: int) -> tuple[np.ndarray, np.ndarray]:
    """Heights and widths (fractions) of the anchors of one cell of feature map ``index``."""
    size_min, size_max = SIZES[index]
    heights = [size_min, math.sqrt(size_min * size_max)]
    widths = list(heights)
    for ratio in RATIOS[index]:
        heights.append(size_min / math.sqrt(ratio))
        widths.append(size_min * math.sqrt(ratio))
    return np.array(heights) / IMAGE_SIZE, np.array(widths) / IMAGE_SIZE


def anchors() -> np.ndarray:
    """All anchors as ``[8432, 4]`` float32 (cy, cx, h, w) fractions, in raw-tensor order."""
    parts = []
    for index, feature in enumerate(FEATURE_MAPS):
        centres = (np.arange(feature.grid) + OFFSET) * STEPS[index] / IMAGE_SIZE
        cy, cx = np.meshgrid(centres, centres, indexing="ij")
        heights, widths = cell_shapes(index)
        count = feature.anchors_per_cell
        block = np.stack(
            [
                np.broadcast_to(cy[:, :, None], (feature.grid, feature.grid, count)),
                np.broadcast_to(cx[:, :, None], (feature.grid, feature.grid, count)),
                np.broadcast_to(heights, (feature.grid, feature.grid, count)),
                np.broadcast_to(widths, (feature.grid, feature.grid, count)),
            ],
            axis=-1,
        )
        parts.append(block.reshape(-1, 4))
    return np.concatenate(parts).astype(np.float32)
