"""Image drops as an attacker, a broken camera and a careless gateway would make them: each
hostile image is quarantined with a reason that says what is wrong, nothing is lost (raw keeps
every file, every record is in bronze or quarantine), the good images of the batch go through,
and what can carry personal data (EXIF GPS, camera serials) never reaches the lake's images."""

from __future__ import annotations

import datetime as dt
import io
import struct
import zlib

import numpy as np
import pyarrow.compute as pc
import pytest
from cityfactory.config.scenarios import get_scenario
from cityfactory.governance.ledger import Kind, LedgerEntry
from cityfactory.ingestion.image_drops import image_key, ingest_image_days
from cityfactory.ingestion.images import ImageRefused, inspect_image
from cityfactory.ingestion.pipeline import ingest_days
from cityfactory.storage.lake import open_lake, sha256_bytes
from cityfactory.storage.parquet import read_partitions
from PIL import Image

DAY = dt.date(2026, 3, 2)
SCENARIO = get_scenario("solar_cells")
RULES = SCENARIO.images


def _cell(seed: int, size: int = 120, mode: str = "L") -> Image.Image:
    """A textured test frame (contrast and edges like an EL cell's)."""
    rng = np.random.default_rng(seed)
    base = np.kron(rng.integers(40, 200, (size // 8, size // 8)), np.ones((8, 8))) + rng.normal(0, 12, (size, size))
    image = Image.fromarray(np.clip(base, 0, 255).astype(np.uint8), "L")
    return image.convert(mode) if mode != "L" else image


def _encode(image: Image.Image, fmt: str = "PNG", **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **options)
    return buffer.getvalue()


def _png_header_only(width: int, height: int) -> bytes:
    """A PNG that claims a huge size (a decompression bomb's header) with almost no data."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")


def _with_exif(orientation: int | None = None, gps: bool = False, serial: str | None = None) -> bytes:
    image = _cell(7, mode="RGB")
    exif = Image.Exif()
    if orientation:
        exif[0x0112] = orientation
    if serial:
        exif[0xA431] = serial
    if gps:
        exif[0x8825] = {1: "N", 2: (45.0, 26.0, 0.0), 3: "E", 4: (9.0, 11.0, 0.0)}
    return _encode(image.crop((0, 0, 120, 90)), "JPEG", exif=exif.tobytes(), quality=95)


def hostile_images() -> dict[str, tuple[bytes, str | None]]:
    """file name -> (bytes, the words its quarantine reason must contain; None: accepted)."""
    good = _encode(_cell(1))
    truncated = _encode(_cell(2))
    return {
        "good_1.png": (good, None),
        "good_2.png": (_encode(_cell(3)), None),
        "rotated_gps.jpg": (_with_exif(orientation=6, gps=True, serial="SN-4711"), None),
        "colour.png": (_encode(_cell(4, mode="RGB")), None),  # converted to the scenario's L
        "empty.png": (b"", "empty file"),
        "truncated.png": (truncated[: len(truncated) // 2], "truncated or corrupt"),
        "notes.png": (b"inspector's notes, not a picture\n" * 20, "not an image"),
        "actually_jpeg.png": (_encode(_cell(5), "JPEG"), "does not match its content (JPEG)"),
        "bomb.png": (_png_header_only(40_000, 40_000), "decompression bomb"),
        "huge_file.png": (good + b"\0" * RULES.max_bytes, "too large"),
        "cmyk.jpg": (_encode(_cell(6, mode="RGB").convert("CMYK"), "JPEG"), "unsupported mode CMYK"),
        "sixteen_bit.png": (_encode(Image.fromarray((np.arange(120 * 120).reshape(120, 120) * 3).astype(np.uint16))),
                            "unsupported mode I;16"),
        "black_frame.png": (_encode(Image.new("L", (120, 120), 0)), "blank frame"),
        "tiny.png": (_encode(_cell(8).resize((20, 20))), "size 20x20 outside"),
        "gif_frame.gif": (_encode(_cell(9), "GIF"), "format GIF is not accepted"),
        "copy_of_good.png": (good, "duplicate image"),
        "no_record.png": (_encode(_cell(10)), "no capture record"),
    }


def _captures(names: list[str]) -> bytes:
    lines = ["file,camera,captured_at,cell_type"]
    for i, name in enumerate(names):
        lines.append(f"{name},el-cam-{1 + i % 2},{DAY} 07:{i:02d}:00,mono")
    lines.append(f"vanished.png,el-cam-1,{DAY} 09:00:00,poly")  # a record whose image never landed
    return ("\n".join(lines) + "\n").encode()


def _ingest(files: dict[str, bytes]):
    lake = open_lake()
    for name, data in files.items():
        lake.put_bytes(f"landing/solar_cells/{DAY}/{name}", data)
    return lake, ingest_days(SCENARIO, lake, [DAY], LedgerEntry("ingest", Kind.BATCH_INGESTED), ingest_image_days)


def test_each_hostile_image_is_quarantined_with_its_reason_and_the_batch_goes_on(lake_uri):
    corpus = hostile_images()
    recorded = [n for n in corpus if n != "no_record.png"]
    lake, result = _ingest({n: d for n, (d, _) in corpus.items()} | {f"captures_{DAY}.csv": _captures(recorded)})

    assert result.rows_in == result.rows_bronze + result.rows_quarantined == len(corpus) + 1  # + the vanished record
    assert len(lake.list(f"raw/solar_cells/dt={DAY}")) == len(corpus) + 1  # raw keeps every file, as it came
    bronze = read_partitions(lake, "bronze", "solar_cells", [DAY], prefix="part-")
    quarantine = read_partitions(lake, "quarantine", "solar_cells", [DAY]).to_pylist()
    accepted = set(bronze["file"].to_pylist())
    assert accepted == {n for n, (_, reason) in corpus.items() if reason is None}
    for name, (_, expected) in corpus.items():
        if expected is None:
            continue
        [row] = [q for q in quarantine if q["source_file"].endswith("/" + name)]
        assert expected in row["reason"], (name, row["reason"])
    assert any("vanished.png, which did not land" in q["reason"] for q in quarantine)


def test_what_reaches_the_lake_is_upright_converted_and_stripped_of_personal_metadata(lake_uri):
    corpus = hostile_images()
    names = ["good_1.png", "rotated_gps.jpg", "colour.png"]
    lake, _ = _ingest({n: corpus[n][0] for n in names} | {f"captures_{DAY}.csv": _captures(names)})
    rows = {r["file"]: r for r in read_partitions(lake, "bronze", "solar_cells", [DAY], prefix="part-").to_pylist()}

    rotated = rows["rotated_gps.jpg"]
    assert (rotated["width"], rotated["height"], rotated["exif_rotated"]) == (90, 120, True)  # 120x90 turned upright
    assert {"GPSInfo", "BodySerialNumber"} <= set(rotated["metadata_stripped"].split(","))
    stored = lake.get_bytes(rotated["image_key"])
    assert rotated["image_key"] == image_key("solar_cells", sha256_bytes(stored))  # content-addressed
    with Image.open(io.BytesIO(stored)) as image:
        assert image.format == "PNG" and image.mode == "L" and not image.getexif() and b"SN-4711" not in stored
    assert rows["colour.png"]["channels"] == 1 and rows["colour.png"]["mode_in"] == "RGB"


def test_a_rerun_of_the_day_gives_the_same_bronze_and_stores_each_image_once(lake_uri):
    corpus = hostile_images()
    names = ["good_1.png", "good_2.png"]
    files = {n: corpus[n][0] for n in names} | {f"captures_{DAY}.csv": _captures(names)}
    lake, first = _ingest(files)
    before = {k: lake.get_bytes(k) for k in lake.list("bronze/solar_cells")}
    images = lake.list("images/solar_cells")
    again = ingest_days(SCENARIO, lake, [DAY], LedgerEntry("ingest", Kind.BATCH_INGESTED), ingest_image_days)
    assert again.counts() == first.counts()
    assert {k: lake.get_bytes(k) for k in lake.list("bronze/solar_cells")} == before
    assert lake.list("images/solar_cells") == images and len(images) == 2


def test_the_pixel_limits_are_errors_before_any_pixel_is_decoded():
    with pytest.raises(ImageRefused, match="decompression bomb: 3000x3000 = 9000000 pixels, more than images.max_pixels"):
        inspect_image(_png_header_only(3000, 3000), "bomb.png", RULES)  # over the scenario's limit
    with pytest.raises(ImageRefused, match="decompression bomb: Image size .* could be decompression bomb"):
        inspect_image(_png_header_only(40_000, 40_000), "bomb.png", RULES)  # over Pillow's own: an error, not a warning


def test_a_label_feed_lands_as_its_own_rows_with_reasons_for_bad_ones(lake_uri):
    corpus = hostile_images()
    labels = (f"file,defect_probability,labelled_at\ngood_1.png,1.0,{DAY} 08:00:00\n"
              f"good_2.png,7,{DAY} 08:00:00\n").encode()
    names = ["good_1.png", "good_2.png"]
    lake, result = _ingest({n: corpus[n][0] for n in names} | {f"captures_{DAY}.csv": _captures(names),
                                                                 f"labels_{DAY}.csv": labels})
    verdicts = read_partitions(lake, "bronze", "solar_cells", [DAY], prefix="labels-")
    assert verdicts["file"].to_pylist() == ["good_1.png"]
    quarantine = read_partitions(lake, "quarantine", "solar_cells", [DAY])
    assert pc.sum(pc.match_substring(quarantine["reason"], "defect_probability")).as_py() == 1
    assert result.rows_in == result.rows_bronze + result.rows_quarantined
