"""Metadata postings against a real Redis: kept in step with every catalogue write and
delete, backfilled once for entries stored before they existed."""

from shared import keys
from shared.catalogue import Catalogue, ImageMeta
from shared.images import canonicalize
from shared.metadata_postings import MetadataPostings, posting_keys
from tests.helpers.images import png


def picture(seed: int):
    return canonicalize(png(seed), max_side=64, max_pixels=10**6)


def test_a_filter_finds_what_the_catalogue_holds_now(redis_client, blobs):
    catalogue = Catalogue(redis_client, blobs)
    catalogue.put("lemon-1", picture(1), filename=None, metadata={"label": "Lemon", "n": 1})
    catalogue.put("lemon-2", picture(2), filename=None, metadata={"label": "Lemon", "ok": True})
    catalogue.put("orange", picture(3), filename=None, metadata={"label": "Orange", "n": "1"})
    postings = catalogue.postings
    assert postings.matching({"label": "Lemon"}) == {"lemon-1", "lemon-2"}
    assert postings.matching({"label": "Lemon", "n": 1.0}) == {"lemon-1"}  # 1 == 1.0
    assert postings.matching({"n": "1"}) == {"orange"}  # a string is not a number
    assert postings.matching({"ok": True}) == {"lemon-2"}
    assert postings.matching({"ok": 1}) == set()  # nor a boolean
    assert postings.matching({"label": "Plum"}) == set()

    # New metadata for the same picture, a new picture under an id, a delete.
    catalogue.put("lemon-1", picture(1), filename=None, metadata={"label": "Lime"})
    catalogue.put("lemon-2", picture(4), filename=None, metadata={"label": "Orange"})
    catalogue.delete("orange")
    assert postings.matching({"label": "Lemon"}) == set()
    assert postings.matching({"label": "Lime"}) == {"lemon-1"}
    assert postings.matching({"label": "Orange"}) == {"lemon-2"}
    assert postings.matching({"n": 1}) == set()
    catalogue.delete("lemon-1")
    catalogue.delete("lemon-2")
    # Nothing is left behind once the catalogue is empty.
    leftovers = [k for k in redis_client.keys("catalog:by-meta*") if k != b"catalog:by-meta-ready"]
    assert leftovers == []


def test_index_import_lists_what_it_adds(redis_client, blobs):
    catalogue = Catalogue(redis_client, blobs)
    image = picture(5)
    meta = ImageMeta(
        id="imported",
        content_hash=image.content_hash,
        width=image.width,
        height=image.height,
        filename=None,
        source_format="PNG",
        added_at=1.0,
        metadata={"label": "Plum", "nested": {"ignored": 1}},
    )
    assert catalogue.add_absent([(meta, image.jpeg, image.thumbnail)]) == {"imported": "added"}
    assert catalogue.postings.matching({"label": "Plum"}) == {"imported"}


def test_entries_stored_before_postings_are_backfilled_once(redis_client, blobs):
    catalogue = Catalogue(redis_client, blobs)
    for n in range(7):
        label = "Lemon" if n % 2 else "Orange"
        catalogue.put(f"old-{n}", picture(n), filename=None, metadata={"label": label})
    # As a catalogue stored by the previous release: no posting sets, no marker.
    redis_client.delete(*redis_client.keys("catalog:by-meta*"))
    postings = MetadataPostings(redis_client)
    assert postings.matching({"label": "Lemon"}) == {"old-1", "old-3", "old-5"}
    assert redis_client.exists(keys.CATALOGUE_POSTINGS_READY)
    # Idempotent: a second backfill (another worker at the same moment) changes nothing.
    redis_client.delete(keys.CATALOGUE_POSTINGS_READY)
    postings.ensure_backfilled()
    assert postings.matching({"label": "Orange"}) == {"old-0", "old-2", "old-4", "old-6"}
    assert redis_client.smembers(keys.catalogue_postings_of("old-0")) == {
        k.encode() for k in posting_keys({"label": "Orange"})
    }
