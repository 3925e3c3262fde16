"""What both scoring clients share (gRPC's
:class:`~accel_widgets.engine.clients.grpc_client.PredictionClient` and REST's
:class:`~accel_widgets.engine.clients.rest_client.RestPredictionClient`): the pictures they
take, a picture as bytes to send, and a batch of files scored with progress (each client's
``score_batch``).

Here rather than in either client, so neither imports the other for them.
"""

from __future__ import annotations

import io
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from accel_widgets.progress import CancelToken, Progress, Reporter, as_reporter

#: bytes (an encoded file), a PIL image, or an H x W x 3 uint8 array.
ImageLike = Any


def encode_image(image: ImageLike, *, max_bytes: int = 12 * 1024 * 1024) -> bytes:
    """Bytes to send for a picture: bytes pass through, arrays and PIL images are encoded."""
    if isinstance(image, (bytes, bytearray, memoryview)):
        return bytes(image)
    from PIL import Image

    if isinstance(image, np.ndarray):
        if image.dtype != np.uint8 or image.ndim not in (2, 3):
            raise ValueError(
                f"score_image takes an H x W x 3 uint8 picture; got shape {image.shape} dtype "
                f"{image.dtype} (use score_numpy_array for a preprocessed tensor)"
            )
        image = Image.fromarray(image)
    if not isinstance(image, Image.Image):
        raise TypeError(
            f"score_image takes bytes, a PIL image or a uint8 array; got {type(image).__name__}"
        )
    if image.mode not in ("RGB", "L", "RGBA", "LA"):
        image = image.convert("RGB")
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", compress_level=1)
    if buffer.tell() <= max_bytes:
        return buffer.getvalue()
    buffer = io.BytesIO()
    image.convert("RGB").save(buffer, format="JPEG", quality=95)
    return buffer.getvalue()


def score_files(
    self: Any,
    paths: Sequence[str | os.PathLike[str]],
    progress: Progress | Reporter | None = None,
    cancel: CancelToken | None = None,
    **kwargs: Any,
) -> list[np.ndarray | dict[str, np.ndarray]]:
    """Score files one request each (batch-1 latency is the point), reporting progress.

    Extra keyword arguments go to :meth:`score_file`. Cancelling stops before the next
    file with :class:`~accel_widgets.errors.CancelledError`.
    """
    report = as_reporter(progress, cancel)
    results = []
    total = len(paths)
    report("score", 0.0 if total else 1.0, f"scoring {total} image(s)")
    for index, path in enumerate(paths):
        report.check()
        results.append(self.score_file(path, **kwargs))
        report("score", (index + 1) / total, f"scored {Path(path).name}")
    return results
