"""The blob store on real files in temporary directories, and the catalogue's references to
it against a real Redis: atomic writes, shared blobs, deletes and replacements, migration."""

import os
import threading
import time

import pytest

from bench.redis_bytes import write_legacy_entry
from shared import keys, staged_images
from shared.blobs import BlobMissing, FileBlobStore, blob_name
from shared.catalogue import Catalogue, ImageMeta
from shared.images import canonicalize
from tests.helpers.images import png


def canonical(seed: int):
    return canonicalize(png(seed), max_side=64, max_pixels=10_000)


def files_under(root) -> list[str]:
    return sorted(p.name for p in root.rglob("*") if p.is_file())


def test_a_blob_is_named_by_its_content_and_stored_once_in_a_sharded_folder(tmp_path):
    store = FileBlobStore(tmp_path)
    name = store.put(b"some bytes")
    assert name == blob_name(b"some bytes") and store.put(b"some bytes") == name
    assert store.path(name) == tmp_path / name[:2] / name[2:4] / name
    assert store.get(name) == b"some bytes" and store.exists(name)
    assert files_under(tmp_path) == [name]  # no temporary file left behind
    assert oct(store.path(name).stat().st_mode & 0o777) == "0o644"


def test_a_write_that_fails_leaves_neither_the_blob_nor_a_temporary_file(tmp_path, monkeypatch):
    store = FileBlobStore(tmp_path)

    def disk_full(*_args):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", disk_full)
    with pytest.raises(OSError, match="No space"):
        store.put(b"never whole")
    assert not store.exists(blob_name(b"never whole"))
    assert files_under(tmp_path) == []


def test_a_missing_blob_is_an_error_that_names_it(tmp_path):
    store = FileBlobStore(tmp_path)
    absent = blob_name(b"absent")
    with pytest.raises(BlobMissing, match=absent):
        store.get(absent)
    assert store.get_many([store.put(b"here"), absent]) == [b"here", None]
    assert store.delete(absent) is False
    for bad in ("../../etc/passwd", "ABC", absent[:-1]):
        with pytest.raises(ValueError, match="not a blob name"):
            store.get(bad)


def test_two_ids_share_a_blob_until_the_last_one_is_deleted(redis_client, blobs):
    catalogue = Catalogue(redis_client, blobs)
    image = canonical(1)
    assert catalogue.put("first", image, filename=None, metadata={})
    assert catalogue.put("second", image, filename=None, metadata={})
    names = catalogue.get_meta("first").blob_names
    assert names == catalogue.get_meta("second").blob_names
    assert files_under(blobs.root) == sorted(names)
    assert redis_client.hgetall(keys.BLOB_REFERENCES) == {n.encode(): b"2" for n in names}

    assert catalogue.delete("first")
    assert catalogue.get_image("second") == image.jpeg  # still there for the other id
    assert catalogue.get_thumbnail("second") == image.thumbnail
    assert catalogue.delete("second") and not catalogue.delete("second")
    assert files_under(blobs.root) == []
    assert redis_client.hgetall(keys.BLOB_REFERENCES) == {}
    assert catalogue.get_image("second") is None


def test_replacing_a_picture_drops_the_old_blobs_only_when_unreferenced(redis_client, blobs):
    catalogue = Catalogue(redis_client, blobs)
    old, new = canonical(1), canonical(2)
    catalogue.put("a", old, filename=None, metadata={})
    catalogue.put("keeper", old, filename=None, metadata={})
    catalogue.put("a", new, filename=None, metadata={})
    assert catalogue.get_image("a") == new.jpeg and catalogue.get_image("keeper") == old.jpeg
    catalogue.put("keeper", new, filename=None, metadata={})
    assert files_under(blobs.root) == sorted(catalogue.get_meta("a").blob_names)


def test_metadata_changes_keep_the_blobs(redis_client, blobs):
    catalogue = Catalogue(redis_client, blobs)
    image = canonical(3)
    catalogue.put("m", image, filename=None, metadata={})
    assert not catalogue.put("m", image, filename=None, metadata={"label": "Lemon"})
    meta = catalogue.get_meta("m")
    assert meta.metadata == {"label": "Lemon"} and catalogue.get_image("m") == image.jpeg
    assert redis_client.hget(keys.BLOB_REFERENCES, meta.image_blob) == b"1"


def test_a_write_waits_for_a_deletion_of_the_same_bytes_then_writes_them(redis_client, blobs):
    """The race content addressing invites: an id deleted while another id uploads the same
    picture. The deleter holds the mark while it removes the file; the writer waits it out."""
    catalogue = Catalogue(redis_client, blobs)
    image = canonical(4)
    catalogue.put("old", image, filename=None, metadata={})
    names = catalogue.get_meta("old").blob_names
    # What delete("old") does, stopped between its claim and the file's removal.
    redis_client.hdel(keys.BLOB_REFERENCES, *names)
    redis_client.delete(keys.catalogue_meta("old"))
    for name in names:
        redis_client.set(keys.blob_deleting(name), "deleter", px=10_000)

    def finish_deleting():
        time.sleep(0.3)
        for name in names:
            blobs.delete(name)
            redis_client.delete(keys.blob_deleting(name))

    deleter = threading.Thread(target=finish_deleting)
    deleter.start()
    started = time.monotonic()
    catalogue.put("new", image, filename=None, metadata={})
    deleter.join()
    assert time.monotonic() - started >= 0.25  # it waited for the deletion
    assert catalogue.get_image("new") == image.jpeg and all(blobs.exists(n) for n in names)


def test_a_blob_referenced_again_before_its_claim_is_not_deleted(redis_client, blobs):
    catalogue = Catalogue(redis_client, blobs)
    image = canonical(5)
    catalogue.put("x", image, filename=None, metadata={})
    names = catalogue.get_meta("x").blob_names
    catalogue._collect(names)  # a late collector: the count is 1, so nothing goes
    assert all(blobs.exists(n) for n in names) and catalogue.get_image("x") == image.jpeg


def test_a_lost_blob_is_reported_and_a_deleted_image_is_not(redis_client, blobs):
    catalogue = Catalogue(redis_client, blobs)
    catalogue.put("lost", canonical(6), filename=None, metadata={})
    blobs.delete(catalogue.get_meta("lost").image_blob)  # the disk lost it
    with pytest.raises(BlobMissing, match="lost"):
        catalogue.get_image("lost")
    assert catalogue.get_images(["nobody"]) == [None]


def test_legacy_entries_move_to_the_blob_store_once(redis_client, blobs):
    """Entries as the release before the blob store wrote them (JPEGs in Redis)."""
    catalogue = Catalogue(redis_client, blobs)
    legacy = {f"old-{n}": canonical(10 + n) for n in range(3)}
    pipe = redis_client.pipeline()
    for image_id, image in legacy.items():
        meta = ImageMeta(image_id, image.content_hash, 8, 8, None, "PNG", 1.0e9 + len(image_id))
        write_legacy_entry(pipe, meta, image.jpeg, image.thumbnail)
    pipe.execute()
    catalogue.put("shares-old-0", legacy["old-0"], filename=None, metadata={})

    assert catalogue.migrate_legacy() == 3
    assert catalogue.migrate_legacy() == 0
    assert redis_client.keys("catalog:image:*") == redis_client.keys("catalog:thumb:*") == []
    for image_id, image in legacy.items():
        assert catalogue.get_image(image_id) == image.jpeg
        assert catalogue.get_thumbnail(image_id) == image.thumbnail
    refs = redis_client.hgetall(keys.BLOB_REFERENCES)
    assert refs[catalogue.get_meta("old-0").image_blob.encode()] == b"2"
    assert catalogue.get_meta("old-1").added_at == 1.0e9 + len("old-1")
    assert len(files_under(blobs.root)) == 6


def test_staged_images_are_deleted_by_the_last_task_counted_once_each(redis_client):
    image = canonical(7)
    pipe = redis_client.pipeline()
    staged_images.stage(pipe, "job-1", {"a": image}, tasks=2, ttl_seconds=60)
    pipe.execute()
    assert staged_images.read(redis_client, "job-1", ["a", "b"]) == [
        (image.jpeg, image.content_hash),
        None,
    ]
    assert 0 < redis_client.ttl(keys.staged_images("job-1")) <= 60
    assert staged_images.done(redis_client, "job-1", "task-1") == 1
    assert staged_images.done(redis_client, "job-1", "task-1") == 1  # delivered again
    assert staged_images.done(redis_client, "job-1", "task-2") == 0
    assert not redis_client.exists(keys.staged_images("job-1"))
    assert staged_images.done(redis_client, "job-1", "task-2") == -1
