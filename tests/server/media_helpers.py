"""Helpers shared by the media and slideshow server tests."""

from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import Any

import attrs
import httpx
from PIL import Image

FIXTURES = Path(__file__).parent.parent / "fixtures" / "media"

_INDEX_OUTCOMES = {
    "accept": (201, "-"),
    "reject-415": (415, "unsupported_media_type"),
    "reject-413-bomb": (413, "too_large"),
    "reject-400-corrupt": (400, "corrupt_media"),
}


@attrs.frozen
class Case:
    """One upload of the bad-input corpus and its documented answer."""

    file: str
    status: int
    code: str  # "-" for 201
    note: str

    @property
    def data(self) -> bytes:
        return (FIXTURES / self.file).read_bytes()


def corpus() -> list[Case]:
    """INDEX.tsv (the adapters' corpus) plus server_cases.tsv (generated cases)."""
    cases = []
    with (FIXTURES / "INDEX.tsv").open(encoding="utf-8") as handle:
        for row in csv.DictReader(handle, delimiter="\t"):
            status, code = _INDEX_OUTCOMES[row["expected"]]
            cases.append(Case(row["filename"], status, code, row["category"]))
    with (FIXTURES / "server_cases.tsv").open(encoding="utf-8") as handle:
        for row in csv.DictReader(handle, delimiter="\t"):
            cases.append(Case(row["file"], int(row["status"]), row["code"], row["note"]))
    return cases


def tiny_jpeg(colour: str = "red", size: tuple[int, int] = (16, 12)) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", size, colour).save(out, format="JPEG")
    return out.getvalue()


async def upload(http: httpx.AsyncClient, data: bytes, filename: str = "f") -> httpx.Response:
    return await http.post(
        "/api/media", files={"file": (filename, data, "application/octet-stream")}
    )


async def fetch(url: str) -> httpx.Response:
    """GET a signed URL with a client that carries no credentials."""
    async with httpx.AsyncClient(timeout=10.0) as anonymous:
        return await anonymous.get(url)


def metadata_left(data: bytes) -> list[str]:
    """What identifying metadata ``data`` (an image) still carries; [] when clean."""
    found = []
    with Image.open(io.BytesIO(data)) as image:
        exif = image.getexif()
        if len(exif):
            found.append(f"exif tags {sorted(exif)}")
        if exif.get_ifd(0x8825):
            found.append("GPS IFD")
        for key in ("exif", "xmp", "XML:com.adobe.xmp", "comment", "photoshop", "iptc"):
            if image.info.get(key):
                found.append(key)
        if getattr(image, "text", None):
            found.append("PNG text")
    for marker in (b"Exif\x00\x00", b"http://ns.adobe.com/xap", b"adobe:ns:meta"):
        if marker in data:
            found.append(repr(marker))
    return found


def stored_files(root: Path) -> set[str]:
    """Every file under ``root`` (a local blob store's directory), as relative paths."""
    if not root.exists():
        return set()
    return {str(p.relative_to(root)) for p in root.rglob("*") if p.is_file()}


def image_info(data: bytes) -> dict[str, Any]:
    with Image.open(io.BytesIO(data)) as image:
        return {
            "format": image.format,
            "size": image.size,
            "frames": getattr(image, "n_frames", 1),
        }
