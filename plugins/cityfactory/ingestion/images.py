"""One landed image, checked and made safe to keep: accepted as clean PNG bytes plus its facts,
or refused with a reason that says what is wrong.

Pillow reads the header first, so size and pixel limits are enforced before any pixel is
decoded (a decompression bomb is refused, never half-decoded); Pillow's own bomb warning is
an error here too. Accepted images are turned upright by their EXIF orientation, converted to
the scenario's mode, and written again as PNG without any metadata: EXIF (GPS position, camera
serials), text chunks and colour profiles do not reach bronze. What was removed is recorded.
"""

from __future__ import annotations

import io
import warnings
from dataclasses import dataclass

import numpy as np

from cityfactory.config.scenarios import ImageRules

EXTENSIONS = {"PNG": (".png",), "JPEG": (".jpg", ".jpeg")}
ORIENTATION = 0x0112
PERSONAL_TAGS = {0x8825: "GPSInfo", 0xA431: "BodySerialNumber", 0xC62F: "CameraSerialNumber",
                 0xA435: "LensSerialNumber", 0x013B: "Artist", 0xA430: "CameraOwnerName"}


class ImageRefused(ValueError):
    """An image that cannot enter bronze; the message is the quarantine reason."""


@dataclass(frozen=True)
class CleanImage:
    png: bytes  # the pixels as PNG, no metadata: what the lake keeps (its sha256 is the image's id)
    format: str
    width: int
    height: int
    channels: int
    mode_in: str
    rotated: bool
    stripped: tuple[str, ...]
    brightness: float
    contrast: float
    sharpness: float
    phash: str

    @property
    def phash_bits(self) -> int:
        """The perceptual hash as a signed 64-bit integer (dbt compares them with bit_count(xor))."""
        value = int(self.phash, 16)
        return value - (1 << 64) if value >= 1 << 63 else value


def statistics(pixels: np.ndarray) -> tuple[float, float, float]:
    """Brightness (mean grey level), contrast (its standard deviation) and sharpness (variance of
    the 4-neighbour Laplacian): a black frame has no contrast, a blurred one little sharpness."""
    grey = pixels.astype(np.float32)
    if grey.ndim == 3:
        grey = grey @ np.array([0.299, 0.587, 0.114], dtype=np.float32)
    laplacian = (grey[1:-1, :-2] + grey[1:-1, 2:] + grey[:-2, 1:-1] + grey[2:, 1:-1] - 4 * grey[1:-1, 1:-1])
    return float(grey.mean()), float(grey.std()), float(laplacian.var()) if laplacian.size else 0.0


def _open(data: bytes, rules: ImageRules):
    from PIL import Image, UnidentifiedImageError

    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        try:
            image = Image.open(io.BytesIO(data))
        except UnidentifiedImageError:
            raise ImageRefused("not an image (no format Pillow knows)") from None
        except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
            raise ImageRefused(f"decompression bomb: {exc}") from None
    pixels = image.width * image.height
    if pixels > rules.max_pixels:
        raise ImageRefused(f"decompression bomb: {image.width}x{image.height} = {pixels} pixels, more than "
                           f"images.max_pixels {rules.max_pixels}")
    return image


def _decode(image):
    from PIL import Image

    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        try:
            image.load()
        except (OSError, SyntaxError, ValueError, Image.DecompressionBombWarning) as exc:
            raise ImageRefused(f"truncated or corrupt {image.format} data ({exc})") from None


def _stripped(image) -> tuple[str, ...]:
    exif = image.getexif()
    tags = [PERSONAL_TAGS.get(tag, "EXIF") for tag in exif if tag != ORIENTATION]
    if exif.get_ifd(0x8825):
        tags.append("GPSInfo")
    tags += [key for key in image.info if key not in ("dpi", "gamma", "transparency", "aspect", "exif")]
    return tuple(sorted(set(tags)))


def inspect_image(data: bytes, name: str, rules: ImageRules) -> CleanImage:
    """The clean image and its facts, or ``ImageRefused`` naming what is wrong."""
    import imagehash
    from PIL import ImageOps

    if not data:
        raise ImageRefused("empty file (0 bytes)")
    if len(data) > rules.max_bytes:
        raise ImageRefused(f"too large: {len(data)} bytes, more than images.max_bytes {rules.max_bytes}")
    image = _open(data, rules)
    if image.format not in rules.formats:
        raise ImageRefused(f"format {image.format} is not accepted (images.formats: {', '.join(rules.formats)})")
    extension = "." + name.rsplit(".", 1)[-1].lower() if "." in name else ""
    if extension not in EXTENSIONS[image.format]:
        raise ImageRefused(f"extension {extension or '(none)'!r} does not match its content ({image.format})")
    if min(image.size) < rules.min_side or max(image.size) > rules.max_side:
        raise ImageRefused(f"size {image.width}x{image.height} outside images.min_side {rules.min_side} .. "
                           f"max_side {rules.max_side}")
    _decode(image)
    fmt, mode_in, stripped = image.format, image.mode, _stripped(image)
    rotated = image.getexif().get(ORIENTATION, 1) not in (1, None)
    if rotated:
        image = ImageOps.exif_transpose(image)
    if image.mode != rules.mode:
        if image.mode not in rules.convert_modes:
            raise ImageRefused(f"unsupported mode {image.mode} (images.convert_modes: {', '.join(rules.convert_modes)})")
        image = image.convert(rules.mode)
    pixels = np.asarray(image)
    brightness, contrast, sharpness = statistics(pixels)
    if contrast < rules.min_contrast:
        raise ImageRefused(f"blank frame: contrast {contrast:.2f} below images.min_contrast {rules.min_contrast}")
    if sharpness < rules.min_sharpness:
        raise ImageRefused(f"out of focus: sharpness {sharpness:.1f} below images.min_sharpness {rules.min_sharpness}")
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")  # no pnginfo, no exif: nothing but the pixels
    channels = 1 if pixels.ndim == 2 else pixels.shape[2]
    return CleanImage(buffer.getvalue(), fmt, image.width, image.height, channels, mode_in, rotated,
                      stripped, brightness, contrast, sharpness, str(imagehash.phash(image)))
