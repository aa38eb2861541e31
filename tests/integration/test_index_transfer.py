"""Moving an index between deployments: `python -m tools.index_transfer` against real Redis,
and a vgg16 index imported into a running system answering searches it never embedded."""

import json
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pytest
import redis

from deploy.launcher import Processes
from shared import keys
from shared.blobs import FileBlobStore
from shared.catalogue import Catalogue
from shared.index_store import IndexStore
from shared.runtime.vector_index import vector_to_bytes
from tests.conftest import ROOT, fresh_database
from tests.helpers.index_files import (
    VGG16_VERSION,
    autoencoder_file,
    autoencoder_version,
    image_entries,
    vgg16_file,
)
from tests.integration.conftest import base_env, stopping
from tests.integration.system import start_system
from tools.index_transfer.file_format import (
    IndexFile,
    ModelFile,
    TransferRefused,
    from_arrays,
    read_file,
    to_arrays,
    write_file,
)

pytestmark = pytest.mark.integration


# Each deployment's blob store, by its Redis database (its blobs are counted there).
_BLOB_DIRS: dict[str, Path] = {}


def blob_dir(client_or_url: redis.Redis | str) -> Path:
    url = client_or_url if isinstance(client_or_url, str) else url_of(client_or_url)
    return _BLOB_DIRS.setdefault(url, Path(tempfile.mkdtemp(prefix="blobs-")))


def url_of(client: redis.Redis) -> str:
    kwargs = client.connection_pool.connection_kwargs
    return f"redis://{kwargs['host']}:{kwargs['port']}/{kwargs['db']}"


def catalogue_of(client: redis.Redis) -> Catalogue:
    return Catalogue(client, FileBlobStore(blob_dir(client)))


def transfer(redis_url: str, *args: str) -> subprocess.CompletedProcess:
    """The command a user runs, on the Redis database at ``redis_url`` and its blobs."""
    return subprocess.run(
        [sys.executable, "-m", "tools.index_transfer", *map(str, args)],
        env=base_env(redis_url, BLOB_STORE_DIR=str(blob_dir(redis_url))),
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )


def fill(client: redis.Redis, index) -> None:
    """Store an index file's content the way the services do: uploads, embeddings, model."""
    store = IndexStore(client)
    catalogue_of(client).add_absent([(e.meta, e.jpeg, e.thumbnail) for e in index.images])
    store.add_vectors(
        index.method,
        index.model_version,
        {i: vector_to_bytes(v) for i, v in zip(index.ids, index.vectors, strict=True)},
        made_from={e.meta.id: e.meta.content_hash for e in index.images},
    )
    if index.model is not None:
        model = index.model
        client.set(keys.model_blob(index.method, index.model_version), model.blob)
        client.set(keys.model_meta(index.method, index.model_version), model.meta_json)
        for name, data in model.artifacts.items():
            client.set(keys.model_artifact(index.method, index.model_version, name), data)
        client.zadd(keys.model_versions(index.method), {index.model_version: 1.0e9})
    store.activate(index.method, index.model_version, previous=None)


def snapshot(client: redis.Redis) -> dict[bytes, bytes]:
    """Every key's serialised value: equal snapshots hold the same data."""
    return {key: client.dump(key) for key in client.scan_iter(count=1000)}


def catalogue_records(client: redis.Redis) -> dict[str, tuple]:
    catalogue = catalogue_of(client)
    return {
        image_id: (
            client.get(keys.catalogue_meta(image_id)),
            catalogue.get_image(image_id),
            catalogue.get_thumbnail(image_id),
            client.zscore(keys.CATALOGUE_IDS, image_id),
        )
        for image_id in catalogue.ids()
    }


@pytest.fixture
def databases(redis_url):
    """Two empty databases: a deployment to export from, one to import into."""
    urls = fresh_database(redis_url), fresh_database(redis_url)
    clients = [redis.Redis.from_url(url) for url in urls]
    yield [*zip(urls, clients, strict=True)]
    for client in clients:
        client.flushdb()


def test_export_import_round_trip_then_nothing_changes(databases, tmp_path):
    (source_url, source), (target_url, target) = databases
    ids = [f"img-{n}" for n in range(7)]
    vgg16, autoencoder = vgg16_file(ids), autoencoder_file(ids)  # the same 7 pictures
    fill(source, vgg16)
    fill(source, autoencoder)
    files = {"vgg16": tmp_path / "vgg16.npz", "autoencoder": tmp_path / "ae.npz"}
    for method, path in files.items():
        done = transfer(source_url, "export", method, path)
        assert done.returncode == 0, done.stderr
        assert "7 images and vectors" in done.stdout

    first = transfer(target_url, "import", files["vgg16"])
    assert first.returncode == 0, first.stderr
    assert "images added: 7" in first.stdout and "vectors stored: 7" in first.stdout
    second = transfer(target_url, "import", files["autoencoder"])
    assert second.returncode == 0, second.stderr
    assert "images already present: 7" in second.stdout and "model: stored" in second.stdout
    assert f"activated: autoencoder searches use {autoencoder.model_version}" in second.stdout

    assert catalogue_records(target) == catalogue_records(source)
    for index in (vgg16, autoencoder):
        method, version = index.method, index.model_version
        assert source.hgetall(keys.index_vectors(method, version)) == target.hgetall(
            keys.index_vectors(method, version)
        )
    version = autoencoder.model_version
    for key in (
        keys.model_blob("autoencoder", version),  # what a worker loads the model from
        keys.model_meta("autoencoder", version),
        keys.model_artifact("autoencoder", version, "loss_curve"),
        keys.model_artifact("autoencoder", version, "preview"),
    ):
        assert source.get(key) is not None and target.get(key) == source.get(key)
    # The vgg16 worker names its own version when it starts; an autoencoder version is
    # activated where none was.
    assert IndexStore(target).versions("vgg16").active is None
    assert IndexStore(target).versions("autoencoder").active == version
    assert target.zrange(keys.model_versions("autoencoder"), 0, -1, withscores=True) == (
        source.zrange(keys.model_versions("autoencoder"), 0, -1, withscores=True)
    )

    before = snapshot(target)
    again = transfer(target_url, "import", files["vgg16"])
    assert again.returncode == 0, again.stderr
    assert "images added: 0" in again.stdout and "images already present: 7" in again.stdout
    assert "vectors stored: 0" in again.stdout and "vectors already present: 7" in again.stdout
    assert transfer(target_url, "import", files["autoencoder"]).returncode == 0
    assert snapshot(target) == before


def test_a_corrupt_file_stores_nothing(databases, tmp_path):
    (source_url, source), (target_url, target) = databases
    fill(source, vgg16_file(["a", "b", "c"]))
    good = tmp_path / "good.npz"
    assert transfer(source_url, "export", "vgg16", good).returncode == 0

    truncated = tmp_path / "truncated.npz"
    truncated.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    # A valid archive whose last record is bad: nothing of the good records before it either.
    arrays = to_arrays(read_file(good))
    metas = arrays["image_meta"].tolist()
    metas[-1] = json.dumps({**json.loads(metas[-1]), "id": "someone-else"})
    bad = {**arrays, "image_meta": np.array(metas)}
    with pytest.raises(TransferRefused, match="another image"):
        from_arrays(bad)
    last_bad = tmp_path / "last-bad.npz"
    np.savez_compressed(last_bad, **bad)

    for path in (truncated, last_bad, tmp_path / "missing.npz"):
        done = transfer(target_url, "import", path)
        assert done.returncode == 1
        assert done.stderr.startswith("refused: ") and "Traceback" not in done.stderr
        assert target.dbsize() == 0


def test_other_pictures_are_kept_and_other_layers_refused(databases, tmp_path):
    (source_url, source), (target_url, target) = databases
    index = vgg16_file(["same", "clash", "new"])
    fill(source, index)
    path = tmp_path / "vgg16.npz"
    assert transfer(source_url, "export", "vgg16", path).returncode == 0

    other = vgg16_file(["clash"], seed=5)  # another picture under the id "clash"
    fill(target, other)
    same = index.images[0]
    catalogue_of(target).add_absent([(same.meta, same.jpeg, same.thumbnail)])
    clash_before = catalogue_records(target)["clash"]
    done = transfer(target_url, "import", path)
    assert done.returncode == 0, done.stderr
    assert "images added: 1" in done.stdout and "images already present: 1" in done.stdout
    assert "vectors stored: 2" in done.stdout
    assert "skipped 1: another picture is stored under this id here: clash" in done.stdout
    assert catalogue_records(target)["clash"] == clash_before
    stored = IndexStore(target).get_vectors("vgg16", VGG16_VERSION, ["clash"])[0]
    assert stored == vector_to_bytes(other.vectors[0])

    # A deployment whose vgg16 worker uses the fc1 layer cannot search pool512 vectors.
    target.flushdb()
    target.set(keys.active_version("vgg16"), "vgg16-imagenet-fc1-4096")
    done = transfer(target_url, "import", path)
    assert done.returncode == 1 and "vgg16-imagenet-fc1-4096" in done.stderr
    assert sorted(target.keys()) == [keys.active_version("vgg16").encode()]


def test_an_imported_vgg16_index_answers_searches_it_never_embedded(
    redis_url, sample_images, tmp_path
):
    """Real VGG16 vectors made elsewhere (here: in this process), imported into a running
    system whose worker has already loaded its index: it finds the image without a restart."""
    from services.vgg16.model import Vgg16Embedder
    from services.vgg16.settings import Vgg16Settings
    from shared.images import canonicalize
    from shared.runtime.ml import decode_images

    source_url = fresh_database(redis_url)
    source = redis.Redis.from_url(source_url)
    paths = {"moved-lemon": sample_images["Lemon"][0], "moved-garlic": sample_images["Garlic"][0]}
    catalogue = catalogue_of(source)
    for image_id, path in paths.items():
        image = canonicalize(path.read_bytes(), max_side=512, max_pixels=50_000_000)
        catalogue.put(image_id, image, filename=path.name, metadata={})
    embedder = Vgg16Embedder(Vgg16Settings(vgg16_weights_dir=ROOT / "var" / "weights"))
    embedder.load()
    found = catalogue.get_images_and_hashes(list(paths))
    vectors = embedder.embed(decode_images([jpeg for jpeg, _ in found], embedder.input_size))
    IndexStore(source).add_vectors(
        "vgg16",
        embedder.version,
        {i: vector_to_bytes(v) for i, v in zip(paths, vectors, strict=True)},
    )
    source.set(keys.active_version("vgg16"), embedder.version)
    exported = tmp_path / "vgg16.npz"
    assert transfer(source_url, "export", "vgg16", exported).returncode == 0
    source.flushdb()

    env = base_env(fresh_database(redis_url))
    _BLOB_DIRS[env["REDIS_URL"]] = Path(env["BLOB_STORE_DIR"])  # the import writes there
    procs = Processes()
    log_dir = tmp_path / "logs"
    log_dir.mkdir()
    with stopping(log_dir, procs):
        service = start_system(procs, env, log_dir, workers=[("vgg16", ["search", "index"])])
        query = sample_images["Lemon"][0]
        empty = service.search_and_wait(query, k=3, methods="vgg16")["methods"]["vgg16"]
        assert empty["results"] == []  # the worker has loaded its (empty) index

        done = transfer(env["REDIS_URL"], "import", exported)
        assert done.returncode == 0, done.stderr
        assert "vectors stored: 2" in done.stdout

        answer = service.search_and_wait(query, k=3, methods="vgg16")["methods"]["vgg16"]
        assert [r["id"] for r in answer["results"]] == ["moved-lemon", "moved-garlic"]
        assert answer["results"][0]["score"] == pytest.approx(1.0, abs=1e-3)
        assert answer["index_size"] == 2


def test_an_imported_autoencoder_version_loads_as_the_worker_loads_it(databases, tmp_path):
    """A real (tiny, untrained) model: after the import, the worker's embedder class loads
    it from Redis and embeds the moved images to the vectors that came with them."""
    from services.autoencoder.model import AutoencoderEmbedder, build_autoencoder, model_to_bytes
    from shared.runtime.ml import decode_images
    from shared.runtime.vector_index import IndexReplica

    (_, _), (target_url, target) = databases
    blob = model_to_bytes(build_autoencoder(32, 16, (8, 8, 16, 16)).autoencoder)
    version = autoencoder_version(blob)
    embedder = AutoencoderEmbedder(blob, version)
    images = image_entries(["p", "q", "r"])
    vectors = embedder.embed(decode_images([e.jpeg for e in images], embedder.input_size))
    meta = json.dumps({"version": version, "latent_dim": 16, "created_at": 1.0e9})
    path = tmp_path / "ae.npz"
    write_file(
        path, IndexFile("autoencoder", version, "euclidean", vectors, images, ModelFile(blob, meta))
    )

    done = transfer(target_url, "import", path)
    assert done.returncode == 0, done.stderr
    store = IndexStore(target)
    assert store.versions("autoencoder").active == version
    loaded = AutoencoderEmbedder(target.get(keys.model_blob("autoencoder", version)), version)
    replica = IndexReplica(store, "autoencoder", version, loaded.dim, loaded.metric)
    # The same batch as at export: oneDNN picks kernels by batch size, and under bfloat16 a
    # batch of one rounds differently, so only the same batch can be compared this tightly.
    again = loaded.embed(decode_images([e.jpeg for e in images], loaded.input_size))
    np.testing.assert_allclose(again, vectors, rtol=1e-5, atol=1e-6)
    hit = replica.search(again[1], 1)[0]
    # Distances are sqrt(|x|^2 - 2 x.q + |q|^2) in float32: for unit vectors one rounding
    # step under the root leaves a vector up to about 5e-4 from itself (seen: 2^-11).
    assert hit.id == "q" and hit.score == pytest.approx(0.0, abs=2e-3)
