"""In-memory vector search, and a replica of a Redis index kept in step with its log.

Small indexes are searched exactly: one matrix product and a partial sort. Above a size
(``APPROXIMATE_INDEX_MIN_VECTORS``) a replica also builds an HNSW graph (usearch) over int8
copies of the vectors; a search then asks the graph for a few dozen candidates and ranks
those by their exact float32 scores, so every score it returns is the exact one.

Workers only (numpy, usearch); the gateway never imports this module.
"""

import logging
import math
import threading
import time
from dataclasses import dataclass, field
from typing import Literal

import numpy as np

from shared.index_store import IndexStore, LogState, parse_stream_id

log = logging.getLogger(__name__)

Metric = Literal["cosine", "euclidean"]
# Vectors are stored in Redis as float16 followed by one tag byte: half the bytes of float32,
# which keeps an image within 4 KB of Redis (README.md, "Redis bytes per image"), with the
# same rankings in practice (python -m bench.vector_precision). The tag makes the length odd,
# so a vector stored as bare float32 by an earlier release (a multiple of 4 bytes) is still
# read, and told apart, without knowing its dimension. Replicas search float32 copies.
STORED_DTYPE = np.dtype("<f2")
FLOAT16_TAG = b"\x02"
EARLIER_DTYPE = np.dtype("<f4")  # bare float32, untagged: releases before float16

# HNSW parameters (usearch's names). Recall@10 and latency at 1M vectors: make bench.
# Tuned on 1M clustered 512-d vectors: connectivity 16 reached recall@10 0.85-0.93 whatever
# the search breadth; 32 reaches 0.95-0.98 for 20% more build time. A wider expansion_add
# (160) also gets there, at twice the build time.
GRAPH_CONNECTIVITY = 32  # edges per node: memory and build time grow with it
GRAPH_EXPANSION_ADD = 64  # breadth of the search that places a new vector
GRAPH_EXPANSION_SEARCH = 512  # breadth of a query's search: recall 0.95 at 128, 0.98 at 512
GRAPH_MIN_CANDIDATES = 64  # graph hits re-ranked exactly, at the least
GRAPH_BUILD_THREADS = 2  # a build is a one-off burst; later additions use one thread


def vector_to_bytes(vector: np.ndarray) -> bytes:
    """A vector as Redis stores it: its float16 values, then the float16 tag."""
    half = np.ascontiguousarray(vector, dtype=np.float32).astype(STORED_DTYPE)
    if not np.isfinite(half).all():
        raise ValueError("vector holds values float16 cannot store (NaN, infinite or > 65504)")
    return half.tobytes() + FLOAT16_TAG


def decode_vector(raw: bytes) -> np.ndarray:
    """A stored vector as float32, whichever format stored it."""
    if len(raw) % 2 == 1 and raw[-1:] == FLOAT16_TAG:
        return np.frombuffer(raw, dtype=STORED_DTYPE, count=len(raw) // 2).astype(np.float32)
    if len(raw) % EARLIER_DTYPE.itemsize == 0:
        return np.frombuffer(raw, dtype=EARLIER_DTYPE)
    raise ValueError(f"{len(raw)} bytes are not a stored vector")


def vector_from_bytes(raw: bytes, dim: int) -> np.ndarray:
    vector = decode_vector(raw)
    if vector.shape != (dim,):
        raise ValueError(f"stored vector has {vector.size} values, the model makes {dim}")
    return vector


@dataclass(frozen=True)
class Hit:
    id: str
    score: float


class VectorIndex:
    """Exact nearest neighbours: one matrix product and a partial sort per query.

    Cosine scores are similarities (higher is better; vectors must be L2-normalised).
    Euclidean scores are distances (lower is better).
    """

    def __init__(self, dim: int, metric: Metric, capacity: int = 1024) -> None:
        self.dim = dim
        self.metric = metric
        self._matrix = np.zeros((capacity, dim), dtype=np.float32)
        self._sq_norms = np.zeros(capacity, dtype=np.float32)
        self._ids: list[str] = []
        self._rows: dict[str, int] = {}

    def __len__(self) -> int:
        return len(self._ids)

    def __contains__(self, image_id: str) -> bool:
        return image_id in self._rows

    def upsert(self, ids: list[str], vectors: np.ndarray) -> None:
        vectors = np.asarray(vectors, dtype=np.float32).reshape(len(ids), self.dim)
        for image_id, vector in zip(ids, vectors, strict=True):
            row = self._rows.get(image_id)
            if row is None:
                row = len(self._ids)
                self._grow_to(row + 1)
                self._ids.append(image_id)
                self._rows[image_id] = row
            self._matrix[row] = vector
            self._sq_norms[row] = float(vector @ vector)

    def remove(self, ids: list[str]) -> None:
        for image_id in ids:
            row = self._rows.pop(image_id, None)
            if row is None:
                continue
            last = len(self._ids) - 1
            if row != last:  # move the last row into the hole: rows stay contiguous
                moved = self._ids[last]
                self._matrix[row] = self._matrix[last]
                self._sq_norms[row] = self._sq_norms[last]
                self._ids[row] = moved
                self._rows[moved] = row
            self._ids.pop()

    def search(self, query: np.ndarray, k: int) -> list[Hit]:
        """The k nearest of all vectors."""
        return self._rank(None, query, k)

    def search_among(self, query: np.ndarray, candidates: list[str], k: int) -> list[Hit]:
        """The k nearest of the candidates still in the index, by their exact scores."""
        rows = [self._rows[i] for i in dict.fromkeys(candidates) if i in self._rows]
        return self._rank(np.array(rows, dtype=np.int64), query, k)

    def vectors_of(self, ids: list[str]) -> np.ndarray:
        return self._matrix[[self._rows[i] for i in ids]]

    def snapshot(self) -> tuple[list[str], np.ndarray]:
        """A copy of every id and vector (later changes do not touch it)."""
        return list(self._ids), self._matrix[: len(self._ids)].copy()

    def _rank(self, rows: np.ndarray | None, query: np.ndarray, k: int) -> list[Hit]:
        """Top k of the given rows (None: every row), equal scores in the order of their ids."""
        count = len(self._ids) if rows is None else len(rows)
        if count == 0 or k <= 0:
            return []
        query = np.asarray(query, dtype=np.float32).reshape(self.dim)
        if rows is None:  # slices are views: searching everything copies no rows
            matrix, sq_norms = self._matrix[:count], self._sq_norms[:count]
            rows = np.arange(count)
        else:
            matrix, sq_norms = self._matrix[rows], self._sq_norms[rows]
        products = matrix @ query
        if self.metric == "cosine":
            scores = products
            order_key = -scores
        else:
            scores = np.sqrt(np.maximum(sq_norms - 2 * products + query @ query, 0.0))
            order_key = scores
        k = min(k, count)
        if k < count:
            # Every row tied with the k-th too, so that ties at the cut are decided by id,
            # not by argpartition's choice: a result equal to the merge of any split of the
            # rows (shared/shards.py), whatever the row order.
            kth = order_key[np.argpartition(order_key, k - 1)[k - 1]]
            top = np.flatnonzero(order_key <= kth)
        else:
            top = np.arange(count)
        top = top[np.lexsort((np.array([self._ids[rows[i]] for i in top]), order_key[top]))][:k]
        return [Hit(self._ids[rows[i]], float(scores[i])) for i in top]

    def _grow_to(self, rows: int) -> None:
        if rows <= len(self._matrix):
            return
        capacity = max(rows, 2 * len(self._matrix))
        matrix = np.zeros((capacity, self.dim), dtype=np.float32)
        matrix[: len(self._ids)] = self._matrix[: len(self._ids)]
        norms = np.zeros(capacity, dtype=np.float32)
        norms[: len(self._ids)] = self._sq_norms[: len(self._ids)]
        self._matrix, self._sq_norms = matrix, norms


class GraphIndex:
    """HNSW graph (usearch) that proposes candidates; VectorIndex.search_among ranks them.

    Cosine vectors are stored as int8: the exact re-ranking of the candidates makes up for
    the precision, and int8 builds twice as fast as float16 here. Euclidean vectors may have
    any norm, which int8 cannot hold, so they are stored as float16.
    """

    def __init__(self, dim: int, metric: Metric) -> None:
        from usearch.index import Index  # noqa: PLC0415 - only replicas above the threshold

        self.dim = dim
        cosine = metric == "cosine"
        self._graph = Index(
            ndim=dim,
            metric="cos" if cosine else "l2sq",
            dtype="i8" if cosine else "f16",
            connectivity=GRAPH_CONNECTIVITY,
            expansion_add=GRAPH_EXPANSION_ADD,
            expansion_search=GRAPH_EXPANSION_SEARCH,
        )
        # usearch keys are integers; an id gets a new key each time its vector changes.
        self._keys: dict[str, int] = {}
        self._ids: dict[int, str] = {}
        self._next_key = 0

    def __len__(self) -> int:
        return len(self._keys)

    def upsert(self, ids: list[str], vectors: np.ndarray, threads: int = 1) -> None:
        if not ids:
            return
        self.remove(ids)
        keys = np.arange(self._next_key, self._next_key + len(ids), dtype=np.uint64)
        self._next_key += len(ids)
        self._graph.add(keys, np.asarray(vectors, dtype=np.float32), threads=threads)
        for image_id, key in zip(ids, keys.tolist(), strict=True):
            self._keys[image_id] = key
            self._ids[key] = image_id

    def remove(self, ids: list[str]) -> None:
        keys = [self._keys.pop(i) for i in ids if i in self._keys]
        if keys:
            self._graph.remove(np.array(keys, dtype=np.uint64))
            for key in keys:
                del self._ids[key]

    def candidates(self, query: np.ndarray, count: int) -> list[str]:
        matches = self._graph.search(np.asarray(query, dtype=np.float32), count)
        return [self._ids[key] for key in matches.keys.tolist() if key in self._ids]

    @property
    def memory_bytes(self) -> int:
        return int(self._graph.memory_usage)


def candidate_count(k: int) -> int:
    """How many graph candidates a top-k search re-ranks exactly (measured: make bench)."""
    return max(4 * k, GRAPH_MIN_CANDIDATES)


class IndexReplica:
    """This process's copy of one Redis index (method + model version), or of one shard of it.

    ``sync()`` replays the change log since the last call, so a search that calls it first
    sees every change that any replica had finished before the search started. It reloads
    the whole index instead when the log no longer continues what this copy holds: trimmed
    past it, ending before it, or an index of another epoch (Redis lost or replaced its data).

    Once the index holds ``graph_min_vectors`` vectors, a graph is built in a background
    thread while exact search goes on serving; changes made during the build are applied to
    the graph before it is switched in, and to both structures from then on.
    """

    def __init__(
        self,
        store: IndexStore,
        method: str,
        version: str,
        dim: int,
        metric: Metric,
        graph_min_vectors: int | None = None,
        shard: int = 0,
    ):
        self.store = store
        self.method = method
        self.version = version
        self.shard = shard
        self.index = VectorIndex(dim, metric)
        self.graph: GraphIndex | None = None
        self.graph_min_vectors = graph_min_vectors
        self._graph_build: _GraphBuild | None = None
        self._position: str | None = None  # newest log entry applied; None = never loaded
        self._epoch: str | None = None  # the index's identity when it was loaded
        self._lock = threading.Lock()
        self.last_search_kind = "exact"  # what answered the latest search: "exact" or "hnsw"

    def sync(self) -> None:
        with self._lock:
            state = self.store.log_state(self.method, self.version, self.shard)
            if self._position is None or self._log_does_not_continue(state):
                self._reload(state)
            while True:
                entries = self.store.read_log(
                    self.method, self.version, after=self._position, shard=self.shard
                )
                if not entries:
                    break
                self._apply(entries)
                self._position = entries[-1].entry_id
            if self._wants_graph():
                self._graph_build = self._start_graph_build()
                threading.Thread(
                    target=self._build_graph,
                    args=(self._graph_build,),
                    daemon=True,
                    name=f"graph-{self.method}-{self.version}-{self.shard}",
                ).start()

    def search(self, query: np.ndarray, k: int, allowed: set[str] | None = None) -> list[Hit]:
        """The k nearest vectors; with ``allowed``, the k nearest of those ids (a filter)."""
        self.sync()
        with self._lock:
            if allowed is not None:
                return self._search_allowed(query, k, allowed)
            self.last_search_kind = "exact" if self.graph is None else "hnsw"
            if self.graph is None:
                return self.index.search(query, k)
            candidates = self.graph.candidates(query, candidate_count(k))
            return self.index.search_among(query, candidates, k)

    def _search_allowed(self, query: np.ndarray, k: int, allowed: set[str]) -> list[Hit]:
        """Called under the lock. The graph's candidates are widened by the filter's
        selectivity (a filter passing 1 in 10 asks for 10 times as many); when that would
        be more rows than the allowed ones, or the graph yields fewer than k of them, the
        allowed rows are scanned exactly instead, so a filter still gets k results whenever
        k images match."""
        present = [i for i in allowed if i in self.index]
        self.last_search_kind = "exact"
        if not present:
            return []
        count = math.ceil(candidate_count(k) * len(self.index) / len(present))
        if self.graph is not None and count < len(present):
            candidates = [i for i in self.graph.candidates(query, count) if i in allowed]
            hits = self.index.search_among(query, candidates, k)
            if len(hits) >= min(k, len(present)):
                self.last_search_kind = "hnsw"
                return hits
        return self.index.search_among(query, present, k)

    def wait_for_graph(self, timeout: float) -> bool:
        """Block until a graph build in progress is switched in (tests, benchmarks)."""
        build = self._graph_build
        return build is None or build.done.wait(timeout)

    def _wants_graph(self) -> bool:
        return (
            self.graph_min_vectors is not None
            and self.graph is None
            and self._graph_build is None
            and len(self.index) >= self.graph_min_vectors
        )

    def _start_graph_build(self) -> "_GraphBuild":
        """Called under the lock: the snapshot the graph starts from, and a change record."""
        ids, vectors = self.index.snapshot()
        return _GraphBuild(ids=ids, vectors=vectors)

    def _build_graph(self, build: "_GraphBuild") -> None:
        started = time.perf_counter()
        try:
            graph = GraphIndex(self.index.dim, self.index.metric)
            graph.upsert(build.ids, build.vectors, threads=GRAPH_BUILD_THREADS)
            build.vectors = None  # free the snapshot before taking the lock
            if not self._install_graph(build, graph):
                return  # the index was reloaded meanwhile; its own build follows
            log.info(
                "graph index built",
                extra={
                    "method": self.method,
                    "version": self.version,
                    "shard": self.shard,
                    "size": len(graph),
                    "seconds": round(time.perf_counter() - started, 1),
                },
            )
        except Exception:  # noqa: BLE001 - exact search serves on; the log says why
            log.exception(
                "graph build failed; this replica stays exact", extra={"method": self.method}
            )
            with self._lock:
                self.graph_min_vectors = None
                if self._graph_build is build:
                    self._graph_build = None
        finally:
            build.done.set()

    def _install_graph(self, build: "_GraphBuild", graph: GraphIndex) -> bool:
        with self._lock:
            if self._graph_build is not build:  # the index was reloaded meanwhile
                return False
            changed = list(build.changed)
            present = [i for i in changed if i in self.index]
            graph.remove([i for i in changed if i not in self.index])
            graph.upsert(present, self.index.vectors_of(present))
            self.graph, self._graph_build = graph, None
            return True

    def _log_does_not_continue(self, state: LogState) -> bool:
        position = parse_stream_id(self._position)
        if state.epoch != self._epoch or parse_stream_id(state.newest) < position:
            # (An index that did not exist yet when this copy was loaded also gets an epoch
            # with its first vector: that reload is cheap and expected, not worth a warning.)
            log.log(
                logging.WARNING if self._epoch is not None else logging.INFO,
                "index lost or replaced in Redis; reloading it",
                extra={
                    "method": self.method,
                    "version": self.version,
                    "epoch": state.epoch,
                    "loaded_epoch": self._epoch,
                    "replica_size": len(self.index),
                },
            )
            return True
        return position < parse_stream_id(state.floor)  # trimmed past what this copy read

    def _reload(self, state: LogState) -> None:
        # ``state`` was read before the scan: anything written during it is replayed after.
        index = VectorIndex(self.index.dim, self.index.metric)
        ids: list[str] = []
        rows: list[np.ndarray] = []
        for image_id, raw in self.store.scan_vectors(self.method, self.version, self.shard):
            ids.append(image_id)
            rows.append(vector_from_bytes(raw, index.dim))
            if len(ids) >= 10_000:
                index.upsert(ids, np.stack(rows))
                ids, rows = [], []
        if ids:
            index.upsert(ids, np.stack(rows))
        self.index, self._position, self._epoch = index, state.newest, state.epoch
        self.graph, self._graph_build = None, None  # rebuilt from the new index
        log.info(
            "index loaded",
            extra={
                "method": self.method,
                "version": self.version,
                "shard": self.shard,
                "size": len(index),
            },
        )

    def _apply(self, entries) -> None:
        # The log says which ids changed; the hash holds their current state. Reading the
        # current state (not the state at the time of the entry) makes replay idempotent.
        changed = list(dict.fromkeys(entry.image_id for entry in entries))
        current = self.store.get_vectors(self.method, self.version, changed)
        present = [(i, raw) for i, raw in zip(changed, current, strict=True) if raw is not None]
        removed = [i for i, raw in zip(changed, current, strict=True) if raw is None]
        present_ids = [i for i, _ in present]
        vectors = (
            np.stack([vector_from_bytes(raw, self.index.dim) for _, raw in present])
            if present
            else None
        )
        self.index.remove(removed)
        if present:
            self.index.upsert(present_ids, vectors)
        if self.graph is not None:
            self.graph.remove(removed)
            if present:
                self.graph.upsert(present_ids, vectors)
        if self._graph_build is not None:
            self._graph_build.changed.update(changed)


def load_whole_index(
    store: IndexStore, method: str, version: str, dim: int, metric: Metric
) -> VectorIndex:
    """Every shard's vectors of an index in one exact VectorIndex (checks that compare
    whole indexes, not searches: it follows no log)."""
    index = VectorIndex(dim, metric)
    ids: list[str] = []
    rows: list[np.ndarray] = []
    for image_id, raw in store.scan_vectors(method, version):
        ids.append(image_id)
        rows.append(vector_from_bytes(raw, dim))
    if ids:
        index.upsert(ids, np.stack(rows))
    return index


@dataclass
class _GraphBuild:
    """A graph being built from a snapshot, and the ids changed since that snapshot."""

    ids: list[str]
    vectors: np.ndarray | None
    changed: set[str] = field(default_factory=set)
    done: threading.Event = field(default_factory=threading.Event)
