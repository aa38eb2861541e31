"""Where image bytes live: a content-addressed blob store, out of Redis.

A blob's name is the sha256 (hex) of its bytes, so the same bytes are stored once whoever
puts them, and a name read from Redis always finds the bytes it was written for. The store
knows nothing of image ids: which blobs are still referenced is the catalogue's business
(shared/catalogue.py counts references in Redis and deletes a blob only when none is left).

``BlobStore`` is the whole interface the rest of the code uses, so that an object store (S3,
GCS, ...) can be added beside ``FileBlobStore`` without touching its callers.
"""

import hashlib
import os
import re
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:  # settings import nothing of this module (the weights build copies them)
    from shared.settings import CommonSettings

_NAME = re.compile(r"^[0-9a-f]{64}$")


class BlobMissing(LookupError):
    """A blob that the catalogue references is not in the store (lost, or never written)."""


def blob_name(data: bytes) -> str:
    """The content address of some bytes: their sha256, hex."""
    return hashlib.sha256(data).hexdigest()


def check_name(name: str) -> str:
    # Names come from Redis and become paths: never let one climb out of the root.
    if not _NAME.match(name):
        raise ValueError(f"not a blob name (64 lowercase hex digits): {name!r}")
    return name


class BlobStore(Protocol):
    def put(self, data: bytes) -> str:
        """Store bytes (once, whoever puts them again); returns their name."""

    def get(self, name: str) -> bytes:
        """The bytes of a blob; BlobMissing if there are none."""

    def get_many(self, names: list[str]) -> list[bytes | None]:
        """The bytes of several blobs, None for each one missing."""

    def delete(self, name: str) -> bool:
        """Remove a blob; False if there was none."""

    def exists(self, name: str) -> bool: ...


class FileBlobStore:
    """Blobs as files under a root directory: ``{root}/{name[:2]}/{name[2:4]}/{name}``.

    Two levels of 256 folders keep each directory small (a million blobs: about 15 a
    folder). A write goes to a temporary file in the blob's folder, is flushed to disk,
    then renamed over the final name, and the folder is flushed too: a reader sees the whole
    blob or none, also after a crash, and two writers of the same bytes just write them twice.
    """

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)

    def path(self, name: str) -> Path:
        check_name(name)
        return self.root / name[:2] / name[2:4] / name

    def put(self, data: bytes) -> str:
        name = blob_name(data)
        final = self.path(name)
        if final.exists():
            return name
        final.parent.mkdir(parents=True, exist_ok=True)
        descriptor, temporary = tempfile.mkstemp(dir=final.parent, prefix=".tmp-")
        try:
            with os.fdopen(descriptor, "wb") as out:
                out.write(data)
                out.flush()
                os.fsync(out.fileno())
            os.chmod(temporary, 0o644)  # mkstemp makes it 0600; other services read it
            os.replace(temporary, final)
        except BaseException:
            Path(temporary).unlink(missing_ok=True)
            raise
        _fsync_directory(final.parent)
        return name

    def get(self, name: str) -> bytes:
        try:
            return self.path(name).read_bytes()
        except FileNotFoundError:
            raise BlobMissing(f"blob {name} is not under {self.root}") from None

    def get_many(self, names: list[str]) -> list[bytes | None]:
        found: list[bytes | None] = []
        for name in names:
            try:
                found.append(self.get(name))
            except BlobMissing:
                found.append(None)
        return found

    def delete(self, name: str) -> bool:
        try:
            self.path(name).unlink()
        except FileNotFoundError:
            return False
        return True

    def exists(self, name: str) -> bool:
        return self.path(name).is_file()


def open_blob_store(settings: "CommonSettings") -> BlobStore:
    """The blob store the catalogue's JPEGs are in: files under BLOB_STORE_DIR."""
    return FileBlobStore(settings.blob_store_dir)


def _fsync_directory(directory: Path) -> None:
    """Make a rename in ``directory`` durable (the new entry reaches the disk)."""
    descriptor = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)
