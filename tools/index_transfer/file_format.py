"""The index file: one model version's vectors, catalogue entries and model as .npz arrays.

Pure (numpy, no Redis): ``to_arrays``/``from_arrays`` convert, ``write_file``/``read_file``
store, and ``from_arrays`` refuses anything malformed before an import uses it. README.md
("Moving an index") has the table of arrays.
"""

import hashlib
import io
import json
import math
import os
import re
import tempfile
import zipfile
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Final

import numpy as np

from shared import names
from shared.catalogue import ImageMeta
from shared.images import ImageRejected, validate_image_id
from shared.model_store import MODEL_ARTIFACTS, ModelFile

FORMAT: Final = "imgsearch-index/1"
# Files keep float32 vectors whatever Redis stores (float16 today): the format is a promise.
FILE_VECTOR_DTYPE: Final = np.dtype("<f4")
# What each method's scores mean (the embedders say the same; importing the autoencoder's
# would load Keras).
METRICS: Final = {"vgg16": "cosine", "autoencoder": "euclidean"}

_VERSION = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
_CONTENT_HASH = re.compile(r"^[0-9a-f]{64}$")
# Autoencoder versions end with the first 8 hex digits of the model file's sha256.
_AUTOENCODER_VERSION = re.compile(r"^ae-\d{8}T\d{6}Z-([0-9a-f]{8})$")


class TransferRefused(Exception):
    """A file or a target the transfer will not take; the message says why."""


@dataclass(frozen=True)
class ImageEntry:
    """One catalogue entry as the catalogue stores it."""

    meta: ImageMeta
    jpeg: bytes
    thumbnail: bytes


@dataclass(frozen=True)
class IndexFile:
    """The content of an export: ``vectors[i]`` was made from ``images[i]``."""

    method: str
    model_version: str
    metric: str
    vectors: np.ndarray  # float32 (N, dim)
    images: list[ImageEntry]
    model: ModelFile | None = None

    @property
    def ids(self) -> list[str]:
        return [entry.meta.id for entry in self.images]

    @property
    def dim(self) -> int:
        return int(self.vectors.shape[1])


# Arrays <-> IndexFile (pure)
def pack_bytes(chunks: list[bytes]) -> tuple[np.ndarray, np.ndarray]:
    """Many byte strings as one flat uint8 array and int64 offsets (chunk i = flat[o[i]:o[i+1]])."""
    offsets = np.zeros(len(chunks) + 1, dtype=np.int64)
    np.cumsum([len(chunk) for chunk in chunks], out=offsets[1:])
    return np.frombuffer(b"".join(chunks), dtype=np.uint8), offsets


def unpack_bytes(flat: np.ndarray, offsets: np.ndarray, name: str) -> list[bytes]:
    """The byte strings of pack_bytes; refuses offsets that do not cut ``flat`` exactly."""
    _expect(flat, name, "u1", 1)
    _expect(offsets, f"{name[: -len('_bytes')]}_offsets", "i8", 1)
    steps = np.diff(offsets)
    if len(offsets) == 0 or offsets[0] != 0 or offsets[-1] != flat.size or (steps <= 0).any():
        raise TransferRefused(
            f"{name}: offsets must start at 0, rise at every entry (no empty entry) and end at "
            f"the array's length {flat.size}"
        )
    data = flat.tobytes()
    return [data[start:end] for start, end in zip(offsets[:-1], offsets[1:], strict=True)]


def to_arrays(index: IndexFile) -> dict[str, np.ndarray]:
    """The arrays of the .npz file (README.md, "Moving an index")."""
    image_bytes, image_offsets = pack_bytes([entry.jpeg for entry in index.images])
    thumbnail_bytes, thumbnail_offsets = pack_bytes([entry.thumbnail for entry in index.images])
    arrays = {
        "format": np.array(FORMAT),
        "method": np.array(index.method),
        "model_version": np.array(index.model_version),
        "metric": np.array(index.metric),
        "dim": np.array(index.dim, dtype=np.int64),
        "ids": np.array(index.ids, dtype=str),
        "vectors": np.ascontiguousarray(index.vectors, dtype=FILE_VECTOR_DTYPE),
        "content_hashes": np.array([e.meta.content_hash for e in index.images], dtype=str),
        "image_meta": np.array([e.meta.portable_json() for e in index.images], dtype=str),
        "image_bytes": image_bytes,
        "image_offsets": image_offsets,
        "thumbnail_bytes": thumbnail_bytes,
        "thumbnail_offsets": thumbnail_offsets,
    }
    if index.model is not None:
        names_ = sorted(index.model.artifacts)
        artifact_bytes, artifact_offsets = pack_bytes([index.model.artifacts[n] for n in names_])
        arrays |= {
            "model_file": np.frombuffer(index.model.blob, dtype=np.uint8),
            "model_meta": np.array(index.model.meta_json),
            "model_artifact_names": np.array(names_, dtype=str),
            "model_artifact_bytes": artifact_bytes,
            "model_artifact_offsets": artifact_offsets,
        }
    return arrays


def from_arrays(arrays: Mapping[str, np.ndarray]) -> IndexFile:
    """Check every array of a file and rebuild what it holds; TransferRefused says what is
    wrong with the first bad array found."""
    missing = [n for n in _REQUIRED if n not in arrays]
    if missing:
        raise TransferRefused(f"not an index file of this service: no {', '.join(missing)}")
    text = {n: _scalar_text(arrays[n], n) for n in ("format", "method", "model_version", "metric")}
    if text["format"] != FORMAT:
        raise TransferRefused(f"format is {text['format']!r}; this version reads {FORMAT!r}")
    method, version, metric = text["method"], text["model_version"], text["metric"]
    if method not in names.METHODS:
        raise TransferRefused(f"unknown method {method!r} (known: {', '.join(names.METHODS)})")
    if not _VERSION.fullmatch(version):
        raise TransferRefused(f"model_version {version!r} is not a valid version name")
    if metric != METRICS[method]:
        raise TransferRefused(f"{method} vectors are compared by {METRICS[method]}, not {metric}")
    dim = arrays["dim"]
    if dim.shape != () or dim.dtype.kind not in "iu" or int(dim) < 1:
        raise TransferRefused("dim must be one positive integer")
    dim = int(dim)

    ids = _expect(arrays["ids"], "ids", "U", 1).tolist()
    count = len(ids)
    vectors = _expect(arrays["vectors"], "vectors", "f4", 2)
    if vectors.shape != (count, dim):
        raise TransferRefused(
            f"vectors has shape {vectors.shape}; {count} ids of dimension {dim} need {(count, dim)}"
        )
    if not np.isfinite(vectors).all():
        raise TransferRefused("vectors holds NaN or infinite values")
    if metric == "cosine" and count:
        norms = np.linalg.norm(vectors, axis=1)
        if np.abs(norms - 1).max() > 1e-3:
            raise TransferRefused("cosine vectors must have length 1 (L2-normalised)")
    for image_id in ids:
        try:
            validate_image_id(image_id)
        except ImageRejected as err:
            raise TransferRefused(f"ids: {err.message}") from err
    if len(set(ids)) != count:
        duplicates = sorted(i for i, n in Counter(ids).items() if n > 1)[:5]
        raise TransferRefused(f"ids are not unique: {', '.join(duplicates)}")
    hashes = _expect(arrays["content_hashes"], "content_hashes", "U", 1).tolist()
    metas = _expect(arrays["image_meta"], "image_meta", "U", 1).tolist()
    jpegs = unpack_bytes(arrays["image_bytes"], arrays["image_offsets"], "image_bytes")
    thumbs = unpack_bytes(arrays["thumbnail_bytes"], arrays["thumbnail_offsets"], "thumbnail_bytes")
    for name, values in {
        "content_hashes": hashes,
        "image_meta": metas,
        "image_bytes": jpegs,
    }.items():
        if len(values) != count:
            raise TransferRefused(f"{name} has {len(values)} entries for {count} ids")
    if len(thumbs) != count:
        raise TransferRefused(f"thumbnail_bytes has {len(thumbs)} entries for {count} ids")
    images = [
        ImageEntry(_image_meta(raw, image_id, content), jpeg, thumb)
        for image_id, content, raw, jpeg, thumb in zip(
            ids, hashes, metas, jpegs, thumbs, strict=True
        )
    ]
    for entry in images:
        if not (entry.jpeg.startswith(b"\xff\xd8") and entry.thumbnail.startswith(b"\xff\xd8")):
            raise TransferRefused(f"the image or thumbnail of {entry.meta.id!r} is not a JPEG")

    model = _model(arrays, version, dim) if method == "autoencoder" else None
    if method == "vgg16":
        _check_vgg16(version, dim)
    return IndexFile(method, version, metric, vectors, images, model)


def write_file(path: Path, index: IndexFile) -> int:
    """Write the .npz at ``path`` exactly (numpy would add ".npz"), all or nothing; its size."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent or ".")
    try:
        with os.fdopen(fd, "wb") as out:
            np.savez_compressed(out, allow_pickle=False, **to_arrays(index))
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path.stat().st_size


def read_file(path: Path) -> IndexFile:
    """Load and validate a file (never unpickling anything); TransferRefused if it is bad."""
    try:
        loaded = np.load(path, allow_pickle=False)
        if not isinstance(loaded, np.lib.npyio.NpzFile):
            raise TransferRefused(f"{path} holds one .npy array, not an .npz archive")
        with loaded as npz:
            arrays = {name: npz[name] for name in npz.files}
    except ValueError as err:  # pickled data or object arrays: refused, never loaded
        raise TransferRefused(f"{path} holds pickled data, which is never loaded ({err})") from err
    except (OSError, EOFError, zipfile.BadZipFile) as err:
        raise TransferRefused(f"{path} is not a readable .npz archive ({err})") from err
    return from_arrays(arrays)


_REQUIRED: Final = (
    "format",
    "method",
    "model_version",
    "metric",
    "dim",
    "ids",
    "vectors",
    "content_hashes",
    "image_meta",
    "image_bytes",
    "image_offsets",
    "thumbnail_bytes",
    "thumbnail_offsets",
)


def _expect(array: np.ndarray, name: str, dtype: str, ndim: int) -> np.ndarray:
    """``array`` if it has the dtype ("U": any unicode length) and number of dimensions."""
    ok = array.dtype.kind == "U" if dtype == "U" else array.dtype == np.dtype(f"<{dtype}")
    if not ok or array.ndim != ndim:
        want = "unicode" if dtype == "U" else np.dtype(f"<{dtype}").name
        raise TransferRefused(
            f"{name} must be a {ndim}-d {want} array, not {array.ndim}-d {array.dtype}"
        )
    return array


def _scalar_text(array: np.ndarray, name: str) -> str:
    return str(_expect(array, name, "U", 0))


def _image_meta(raw: str, image_id: str, content: str) -> ImageMeta:
    if not _CONTENT_HASH.fullmatch(content):
        raise TransferRefused(f"content hash of {image_id!r} is not 64 hex digits: {content!r}")
    try:
        meta = ImageMeta.from_json(raw)
    except (ValueError, TypeError) as err:
        raise TransferRefused(
            f"image_meta of {image_id!r} is not a catalogue record: {err}"
        ) from err
    fields_ok = (
        isinstance(meta.width, int)
        and isinstance(meta.height, int)
        and isinstance(meta.added_at, int | float)
        and math.isfinite(meta.added_at)
        and isinstance(meta.source_format, str)
        and isinstance(meta.filename, str | None)
        and isinstance(meta.metadata, dict)
    )
    if not fields_ok:
        raise TransferRefused(f"image_meta of {image_id!r} has fields of the wrong type")
    if (meta.id, meta.content_hash) != (image_id, content):
        raise TransferRefused(f"image_meta of {image_id!r} names another image or picture")
    return meta


def _model(arrays: Mapping[str, np.ndarray], version: str, dim: int) -> ModelFile:
    """The autoencoder model of a file: the vectors cannot be searched without it."""
    if "model_file" not in arrays or "model_meta" not in arrays:
        raise TransferRefused("an autoencoder file must hold model_file and model_meta")
    blob = _expect(arrays["model_file"], "model_file", "u1", 1).tobytes()
    try:
        with zipfile.ZipFile(io.BytesIO(blob)) as archive:
            is_keras = "config.json" in archive.namelist()
    except zipfile.BadZipFile:
        is_keras = False
    if not is_keras:
        raise TransferRefused("model_file is not a Keras .keras file")
    named = _AUTOENCODER_VERSION.fullmatch(version)
    if named and hashlib.sha256(blob).hexdigest()[:8] != named.group(1):
        raise TransferRefused(f"model_file is not the model that version {version!r} names")
    meta_json = _scalar_text(arrays["model_meta"], "model_meta")
    try:
        meta = json.loads(meta_json)
    except ValueError as err:
        raise TransferRefused(f"model_meta is not JSON: {err}") from err
    if not isinstance(meta, dict):
        raise TransferRefused("model_meta must be a JSON object")
    if meta.get("version", version) != version:
        raise TransferRefused(f"model_meta describes version {meta['version']!r}, not {version!r}")
    if meta.get("latent_dim", dim) != dim:
        raise TransferRefused(f"the model makes {meta['latent_dim']}-d vectors; dim is {dim}")
    artifacts: dict[str, bytes] = {}
    if "model_artifact_names" in arrays:
        names_ = _expect(arrays["model_artifact_names"], "model_artifact_names", "U", 1).tolist()
        unknown = set(names_) - set(MODEL_ARTIFACTS)
        if unknown or len(set(names_)) != len(names_):
            raise TransferRefused(
                f"model_artifact_names must be distinct ones of {MODEL_ARTIFACTS}"
            )
        data = unpack_bytes(
            arrays["model_artifact_bytes"], arrays["model_artifact_offsets"], "model_artifact_bytes"
        )
        if len(data) != len(names_):
            raise TransferRefused("model_artifact_bytes does not match model_artifact_names")
        artifacts = dict(zip(names_, data, strict=True))
    return ModelFile(blob, meta_json, artifacts)


def _check_vgg16(version: str, dim: int) -> None:
    # The vgg16 worker's own table of versions, so the two never disagree (a cheap import:
    # the model module loads TensorFlow only when a model is built).
    from services.vgg16.model import DIMS, VERSIONS

    layer = next((name for name, known in VERSIONS.items() if known == version), None)
    if layer is None:
        raise TransferRefused(
            f"unknown vgg16 version {version!r} (known: {', '.join(VERSIONS.values())})"
        )
    if DIMS[layer] != dim:
        raise TransferRefused(f"{version} vectors have {DIMS[layer]} values, not {dim}")
