"""An image dataset's profile, read from a folder with one subfolder per class (the layout most
labelled image sets ship in): the classes, the images of each, their formats, sizes and contrast.

A file that does not open as an image is left out and named; a class with too few images, or two
classes sharing a file name (one drop would hold both), is refused with the fix.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from cityfactory.profiling.drafts import ScaffoldError

MIN_PER_CLASS = 10  # fewer cannot fill a train, a validation and a test split
GREY_MODES = ("1", "L", "LA", "I", "I;16", "F")


@dataclass(frozen=True)
class LabelledImage:
    path: str  # relative to the folder: <class>/<file>
    label: str
    format: str
    width: int
    height: int
    bytes: int
    contrast: float  # grey-level standard deviation


@dataclass(frozen=True)
class ImageFolderProfile:
    folder: Path
    classes: tuple[str, ...]
    images: tuple[LabelledImage, ...]
    mode: str  # L when every image is greyscale, else RGB
    notes: list[str] = field(default_factory=list)

    @property
    def formats(self) -> list[str]:
        return sorted({i.format for i in self.images})

    def per_class(self) -> dict[str, int]:
        return dict(Counter(i.label for i in self.images))


def profile_image_folder(folder: Path) -> ImageFolderProfile:
    """Profile ``folder``: each subfolder is a class, each image file in it an example."""
    from PIL import Image, ImageStat, UnidentifiedImageError

    classes = sorted(p.name for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))
    if len(classes) < 2:
        raise ScaffoldError(f"{folder}: an image folder needs one subfolder per class, at least two "
                            f"(found {', '.join(classes) or 'none'})")
    images, modes, notes, unreadable = [], set(), [], []
    for label in classes:
        for path in sorted(p for p in (folder / label).iterdir() if p.is_file() and not p.name.startswith(".")):
            try:
                with Image.open(path) as image:
                    modes.add(image.mode)
                    contrast = ImageStat.Stat(image.convert("L")).stddev[0]
                    images.append(LabelledImage(f"{label}/{path.name}", label, image.format, image.width,
                                                image.height, path.stat().st_size, contrast))
            except (UnidentifiedImageError, OSError):
                unreadable.append(f"{label}/{path.name}")
    if unreadable:
        notes.append(f"left out, not images: {', '.join(unreadable[:5])}{' ...' if len(unreadable) > 5 else ''}")
    _refuse_what_cannot_replay(folder, images, classes)
    return ImageFolderProfile(folder, tuple(classes), tuple(images),
                              "L" if modes <= set(GREY_MODES) else "RGB", notes)


def _refuse_what_cannot_replay(folder: Path, images: list[LabelledImage], classes: list[str]) -> None:
    counts = Counter(i.label for i in images)
    if few := [f"{c} ({counts[c]})" for c in classes if counts[c] < MIN_PER_CLASS]:
        raise ScaffoldError(f"{folder}: classes with fewer than {MIN_PER_CLASS} images: {', '.join(few)}")
    names = Counter(Path(i.path).name for i in images)
    if shared := sorted(n for n, k in names.items() if k > 1):
        raise ScaffoldError(f"{folder}: file names in more than one class folder ({', '.join(shared[:5])}): a day's "
                            "drop holds files by name, rename them apart")
    if commas := [i.path for i in images if "," in i.path]:
        raise ScaffoldError(f"{folder}: file names with a comma ({', '.join(commas[:5])}): rename them")
