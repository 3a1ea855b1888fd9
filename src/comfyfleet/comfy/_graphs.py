"""Small API-format graphs for smoke tests and health checks.

They need no model files, so they run on a bare install and on CPU, and they end in SaveImage so
the whole path (queue, execute, history, output file, /view) is exercised.
"""

from __future__ import annotations

from typing import Any


def sample_graph(*, prefix: str, seed: int = 0, size: int = 64) -> dict[str, Any]:
    """EmptyImage -> ImageInvert -> SaveImage, writing `<prefix>_00001_.png` and so on.

    ComfyUI caches by inputs: submitting an identical prompt twice skips execution and writes
    no new file. Vary `seed` (it becomes the fill colour) or `prefix` between submissions when
    a test needs a fresh run; `size` is the square edge in pixels.
    """
    return {
        "1": {
            "class_type": "EmptyImage",
            "inputs": {
                "width": size,
                "height": size,
                "batch_size": 1,
                "color": seed % 0xFFFFFF,
            },
        },
        "2": {"class_type": "ImageInvert", "inputs": {"image": ["1", 0]}},
        "3": {
            "class_type": "SaveImage",
            "inputs": {"images": ["2", 0], "filename_prefix": prefix},
        },
    }
