"""In-memory exact vector search, and a replica of a Redis index kept in step with its log.

Workers only (numpy); the gateway never imports this module.
"""

import logging
import threading
from dataclasses import dataclass
from typing import Literal

import numpy as np

from shared.index_store import IndexStore, parse_stream_id

log = logging.getLogger(__name__)

Metric = Literal["cosine", "euclidean"]
VECTOR_DTYPE = np.dtype("<f4")


def vector_to_bytes(vector: np.ndarray) -> bytes:
    return np.ascontiguousarray(vector, dtype=VECTOR_DTYPE).tobytes()


def vector_from_bytes(raw: bytes, dim: int) -> np.ndarray:
    vector = np.frombuffer(raw, dtype=VECTOR_DTYPE)
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
        count = len(self._ids)
        if count == 0 or k <= 0:
            return []
        query = np.asarray(query, dtype=np.float32).reshape(self.dim)
        products = self._matrix[:count] @ query
        if self.metric == "cosine":
            scores = products
            order_key = -scores
        else:
            squared = np.maximum(self._sq_norms[:count] - 2 * products + query @ query, 0.0)
            scores = np.sqrt(squared)
            order_key = scores
        k = min(k, count)
        top = np.argpartition(order_key, k - 1)[:k] if k < count else np.arange(count)
        top = top[np.lexsort((np.array([self._ids[i] for i in top]), order_key[top]))]
        return [Hit(self._ids[i], float(scores[i])) for i in top]

    def _grow_to(self, rows: int) -> None:
        if rows <= len(self._matrix):
            return
        capacity = max(rows, 2 * len(self._matrix))
        matrix = np.zeros((capacity, self.dim), dtype=np.float32)
        matrix[: len(self._ids)] = self._matrix[: len(self._ids)]
        norms = np.zeros(capacity, dtype=np.float32)
        norms[: len(self._ids)] = self._sq_norms[: len(self._ids)]
        self._matrix, self._sq_norms = matrix, norms


class IndexReplica:
    """This process's copy of one Redis index (method + model version).

    ``sync()`` replays the change log since the last call, so a search that calls it first
    sees every change that any replica had finished before the search started.
    """

    def __init__(self, store: IndexStore, method: str, version: str, dim: int, metric: Metric):
        self.store = store
        self.method = method
        self.version = version
        self.index = VectorIndex(dim, metric)
        self._position: str | None = None  # newest log entry applied; None = never loaded
        self._lock = threading.Lock()

    def sync(self) -> None:
        with self._lock:
            if self._position is None or self._fell_behind_trim():
                self._reload()
            while True:
                entries = self.store.read_log(self.method, self.version, after=self._position)
                if not entries:
                    return
                self._apply(entries)
                self._position = entries[-1].entry_id

    def search(self, query: np.ndarray, k: int) -> list[Hit]:
        self.sync()
        with self._lock:
            return self.index.search(query, k)

    def _fell_behind_trim(self) -> bool:
        floor = self.store.log_floor(self.method, self.version)
        return parse_stream_id(self._position) < parse_stream_id(floor)

    def _reload(self) -> None:
        # Read the log position first: anything written during the scan is replayed after it.
        position = self.store.log_position(self.method, self.version)
        index = VectorIndex(self.index.dim, self.index.metric)
        ids: list[str] = []
        rows: list[np.ndarray] = []
        for image_id, raw in self.store.scan_vectors(self.method, self.version):
            ids.append(image_id)
            rows.append(vector_from_bytes(raw, index.dim))
            if len(ids) >= 10_000:
                index.upsert(ids, np.stack(rows))
                ids, rows = [], []
        if ids:
            index.upsert(ids, np.stack(rows))
        self.index, self._position = index, position
        log.info(
            "index loaded",
            extra={"method": self.method, "version": self.version, "size": len(index)},
        )

    def _apply(self, entries) -> None:
        # The log says which ids changed; the hash holds their current state. Reading the
        # current state (not the state at the time of the entry) makes replay idempotent.
        changed = list(dict.fromkeys(entry.image_id for entry in entries))
        current = self.store.get_vectors(self.method, self.version, changed)
        present = [(i, raw) for i, raw in zip(changed, current, strict=True) if raw is not None]
        self.index.remove([i for i, raw in zip(changed, current, strict=True) if raw is None])
        if present:
            self.index.upsert(
                [i for i, _ in present],
                np.stack([vector_from_bytes(raw, self.index.dim) for _, raw in present]),
            )
