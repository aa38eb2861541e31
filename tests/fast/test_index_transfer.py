"""The index file format: arrays round-trip, and every bad file is refused before any use."""

import json
import pickle

import numpy as np
import pytest

from tests.helpers.index_files import (
    autoencoder_file,
    keras_file,
    vgg16_file,
)
from tools.index_transfer.file_format import (
    FORMAT,
    IndexFile,
    TransferRefused,
    from_arrays,
    pack_bytes,
    read_file,
    to_arrays,
    unpack_bytes,
    write_file,
)


def assert_same(a: IndexFile, b: IndexFile) -> None:
    assert (a.method, a.model_version, a.metric, a.ids) == (
        b.method,
        b.model_version,
        b.metric,
        b.ids,
    )
    assert a.vectors.dtype == b.vectors.dtype == np.float32
    assert np.array_equal(a.vectors, b.vectors)
    assert a.images == b.images
    assert a.model == b.model


def test_packed_bytes_round_trip():
    chunks = [b"a", b"\x00\xff" * 1000, b"xyz"]
    flat, offsets = pack_bytes(chunks)
    assert flat.dtype == np.uint8 and offsets.dtype == np.int64
    assert offsets.tolist() == [0, 1, 2001, 2004]
    assert unpack_bytes(flat, offsets, "image_bytes") == chunks
    assert unpack_bytes(*pack_bytes([]), "image_bytes") == []


@pytest.mark.parametrize("make", [vgg16_file, autoencoder_file])
def test_arrays_and_file_round_trip(make, tmp_path):
    original = make(["img-1", "Lemon-0", "b.c_d"])
    arrays = to_arrays(original)
    assert str(arrays["format"]) == FORMAT
    assert arrays["ids"].dtype.kind == "U" and arrays["vectors"].dtype == np.float32
    assert arrays["content_hashes"].tolist() == [e.meta.content_hash for e in original.images]
    assert_same(from_arrays(arrays), original)

    path = tmp_path / "index.bin"  # written exactly there: numpy would append ".npz"
    write_file(path, original)
    assert [p.name for p in tmp_path.iterdir()] == ["index.bin"]
    with np.load(path, allow_pickle=False) as npz:
        assert not any(npz[name].dtype.hasobject for name in npz.files)
    assert_same(read_file(path), original)


def refused(arrays: dict[str, np.ndarray], match: str) -> None:
    with pytest.raises(TransferRefused, match=match):
        from_arrays(arrays)


def test_refuses_wrong_format_string():
    arrays = to_arrays(vgg16_file(["a", "b"]))
    refused({**arrays, "format": np.array("imgsearch-index/2")}, "format is 'imgsearch-index/2'")
    refused({k: v for k, v in arrays.items() if k != "format"}, "no format")


def test_refuses_mismatched_shapes():
    arrays = to_arrays(vgg16_file(["a", "b", "c"]))
    refused({**arrays, "vectors": arrays["vectors"][:2]}, r"shape \(2, 512\)")
    refused({**arrays, "dim": np.array(256)}, "shape")
    refused({**arrays, "vectors": arrays["vectors"].astype(np.float64)}, "float32")
    refused({**arrays, "content_hashes": arrays["content_hashes"][:2]}, "content_hashes has 2")
    offsets = arrays["image_offsets"].copy()
    offsets[-1] += 1
    refused({**arrays, "image_offsets": offsets}, "offsets")


def test_refuses_duplicate_and_invalid_ids():
    arrays = to_arrays(vgg16_file(["a", "b", "c"]))
    refused({**arrays, "ids": np.array(["a", "b", "a"])}, "not unique: a")
    refused({**arrays, "ids": np.array(["a", "../etc", "c"])}, "invalid id")


def test_refuses_records_that_do_not_match_their_ids():
    arrays = to_arrays(vgg16_file(["a", "b"]))
    hashes = arrays["content_hashes"].copy()
    hashes[1] = "0" * 64
    refused({**arrays, "content_hashes": hashes}, "another image or picture")
    metas = arrays["image_meta"].copy()
    metas[0] = '{"id": "a"}'
    refused({**arrays, "image_meta": metas}, "not a catalogue record")


def test_refuses_vectors_the_method_cannot_use():
    arrays = to_arrays(vgg16_file(["a", "b"]))
    refused({**arrays, "vectors": arrays["vectors"] * 2}, "L2-normalised")
    nan = arrays["vectors"].copy()
    nan[0, 0] = np.nan
    refused({**arrays, "vectors": nan}, "NaN")
    refused({**arrays, "model_version": np.array("vgg16-other")}, "unknown vgg16 version")
    refused({**arrays, "metric": np.array("euclidean")}, "compared by cosine")


def test_refuses_an_autoencoder_file_without_its_model_or_with_another():
    arrays = to_arrays(autoencoder_file(["a", "b"]))
    refused({k: v for k, v in arrays.items() if k != "model_file"}, "must hold model_file")
    other = np.frombuffer(keras_file(b"other weights"), dtype=np.uint8)
    refused({**arrays, "model_file": other}, "not the model that version")
    refused({**arrays, "model_file": np.frombuffer(b"not a zip", np.uint8)}, "not a Keras")
    meta = json.loads(str(arrays["model_meta"]))
    refused({**arrays, "model_meta": np.array(json.dumps({**meta, "latent_dim": 9}))}, "9-d")
    names = np.array(["meta", "preview"])  # "meta" would overwrite the model's meta key
    refused({**arrays, "model_artifact_names": names}, "model_artifact_names")


def test_refuses_pickles_and_object_arrays(tmp_path):
    arrays = to_arrays(vgg16_file(["a", "b"]))
    with_objects = tmp_path / "objects.npz"
    np.savez(with_objects, **{**arrays, "ids": np.array(["a", "b"], dtype=object)})
    with pytest.raises(TransferRefused, match="pickled data"):
        read_file(with_objects)

    pickled = tmp_path / "pickled.npz"
    pickled.write_bytes(pickle.dumps(arrays))
    with pytest.raises(TransferRefused, match="pickled data"):
        read_file(pickled)


def test_refuses_files_that_are_not_npz_archives(tmp_path):
    single = tmp_path / "single.npy"
    np.save(single, np.zeros(3))
    with pytest.raises(TransferRefused, match="not an .npz archive"):
        read_file(single)
    good = tmp_path / "good.npz"
    write_file(good, vgg16_file(["a"]))
    truncated = tmp_path / "truncated.npz"
    truncated.write_bytes(good.read_bytes()[:-100])
    with pytest.raises(TransferRefused, match="not a readable .npz"):
        read_file(truncated)
    with pytest.raises(TransferRefused, match="not a readable .npz"):
        read_file(tmp_path / "missing.npz")
