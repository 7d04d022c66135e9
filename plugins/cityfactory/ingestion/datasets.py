"""Public datasets: found under the configured data folder or inside an installed package, or
downloaded once; always checksum-pinned."""

from __future__ import annotations

import logging
import urllib.request
from pathlib import Path

from cityfactory.config.scenarios import DatasetFile, Source
from cityfactory.settings import get_settings
from cityfactory.storage.lake import sha256_file

log = logging.getLogger(__name__)


class DatasetError(RuntimeError):
    """A dataset file that is missing or does not match its pinned checksum."""


def _verify(path: Path, spec: DatasetFile) -> Path:
    actual = sha256_file(path)
    if actual != spec.sha256:
        raise DatasetError(f"{path}: sha256 is {actual}, expected {spec.sha256} (pinned in the scenario)")
    return path


def file_stamp(dataset: str, spec: DatasetFile) -> tuple | None:
    """Where the file lies now, its size and modification time: a cache of its content keyed by
    this notices a file changed under a running process (and verifies it again)."""
    settings = get_settings()
    for path in (settings.data_dir / dataset / spec.name, settings.cache_dir / "datasets" / dataset / spec.name):
        if path.exists():
            stat = path.stat()
            return str(path), stat.st_size, stat.st_mtime_ns
    return None


def dataset_file(dataset: str, spec: DatasetFile) -> Path:
    """Local path of a verified dataset file: ``$CITYFACTORY_DATA_DIR/<dataset>/<name>`` when
    present, else a download from ``spec.url`` into the cache, verified before use."""
    settings = get_settings()
    local = settings.data_dir / dataset / spec.name
    if local.exists():
        return _verify(local, spec)
    cached = settings.cache_dir / "datasets" / dataset / spec.name
    if cached.exists():
        return _verify(cached, spec)
    if not spec.url:
        raise DatasetError(f"{local}: not found and the scenario gives no url to download it from")
    cached.parent.mkdir(parents=True, exist_ok=True)
    partial = cached.with_suffix(".part")
    log.info("downloading %s from %s", spec.name, spec.url)
    try:
        with urllib.request.urlopen(spec.url, timeout=60) as response, open(partial, "wb") as out:
            while block := response.read(1 << 20):
                out.write(block)
    except OSError as exc:
        raise DatasetError(f"download of {spec.url} failed: {exc}") from exc
    try:
        _verify(partial, spec)
    except DatasetError:
        partial.unlink()
        raise
    partial.replace(cached)
    return cached


def package_file(package: str, spec: DatasetFile) -> Path:
    """A file shipped inside an installed package (``spec.name`` relative to it), verified."""
    import importlib.util

    found = importlib.util.find_spec(package)
    if found is None or not found.submodule_search_locations:
        raise DatasetError(f"package {package!r} is not installed (pin it in requirements.txt)")
    return _verify(Path(next(iter(found.submodule_search_locations))) / spec.name, spec)


def source_file(source: Source, spec: DatasetFile) -> Path:
    """A source's pinned file, from its package or its dataset folder."""
    return package_file(source.package, spec) if source.package else dataset_file(source.dataset, spec)
