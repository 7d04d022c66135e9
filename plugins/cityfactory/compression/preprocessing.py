"""What a node does to an image before the model sees it, declared in the bundle and done here
once for everyone: training reads the lake's images through it, nodes read requests through it,
so the two cannot drift apart.

The bundle's ``preprocessing`` names the colour ``mode`` (``L`` or ``RGB``), the square ``size``
and the resampling (bilinear); pixels become float32 in [0, 1], channels first. The image is
turned upright by its EXIF orientation first (a camera that writes it must not confuse the model).
"""

from __future__ import annotations

import io
import warnings

import numpy as np

SIGNATURES = {b"\x89PNG\r\n\x1a\n": "PNG", b"\xff\xd8\xff": "JPEG"}


class ImageInputError(ValueError):
    """An image that cannot be fed: ``status`` 413 (too big) or 415 (not an image we take)."""

    def __init__(self, status: int, detail: str):
        super().__init__(detail)
        self.status, self.detail = status, detail


def sniff(data: bytes) -> str | None:
    """The format the bytes really are (by their signature), whatever they are called."""
    return next((name for magic, name in SIGNATURES.items() if data.startswith(magic)), None)


def contract(mode: str, size: int) -> dict:
    """The ``preprocessing`` entry of a bundle manifest."""
    return {"mode": mode, "size": size, "resample": "bilinear", "scale": "1/255", "layout": "NCHW",
            "exif_orientation": "applied", "formats": sorted(set(SIGNATURES.values()))}


def pixels(data: bytes, mode: str, size: int, max_pixels: int = 16_000_000) -> np.ndarray:
    """Image bytes -> (channels, size, size) uint8, or ``ImageInputError`` saying why not."""
    from PIL import Image, ImageOps, UnidentifiedImageError

    if sniff(data) is None:
        raise ImageInputError(415, "image: not a PNG or JPEG (by its content)")
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        try:
            image = Image.open(io.BytesIO(data))
            if image.width * image.height > max_pixels:
                raise ImageInputError(413, f"image: {image.width}x{image.height} pixels, more than {max_pixels}")
            image.load()
        except ImageInputError:
            raise
        except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
            raise ImageInputError(415, f"image: cannot be decoded ({exc})") from None
        except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
            raise ImageInputError(413, f"image: {exc}") from None
    image = ImageOps.exif_transpose(image).convert(mode).resize((size, size), Image.Resampling.BILINEAR)
    array = np.asarray(image)
    return array[None] if array.ndim == 2 else array.transpose(2, 0, 1)


def as_inputs(uint8: np.ndarray) -> np.ndarray:
    """uint8 pixels -> the model's float32 input in [0, 1]."""
    return uint8.astype(np.float32) / 255.0
