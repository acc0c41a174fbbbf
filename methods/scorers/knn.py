"""KNN (Sun et al., 2022): minus the distance to the k-th nearest ID training example,
on L2-normalised features.

Two exact search backends, chosen by the `backend` option (part of the eval_id, never by
which package happens to be installed): `sklearn` (the default: scikit-learn's brute-force
search works in chunks, so no N × N matrix is built) and `faiss` (faiss-cpu's exact
IndexFlatIP, inner products on the normalised features; about 5× faster here). On unit
vectors ‖a − b‖² = 2 − 2⟨a, b⟩, so both give the same neighbours and distances up to
float32 rounding (tested to 1e-5)."""

from __future__ import annotations

from typing import Any

import numpy as np
from sklearn.neighbors import NearestNeighbors

from harness.scorer import Scorer

BACKENDS = ("sklearn", "faiss")


def normalise(features: np.ndarray) -> np.ndarray:
    norm = np.linalg.norm(features, axis=1, keepdims=True)
    return features / np.maximum(norm, 1e-12)


def check_backend(scorer: str, backend: str) -> str:
    if backend not in BACKENDS:
        raise ValueError(f"{scorer} backend must be one of {BACKENDS}, got {backend!r}")
    if backend == "faiss":
        try:
            import faiss  # noqa: F401
        except ImportError as exc:
            raise ValueError(
                f"{scorer} backend='faiss' needs faiss-cpu (pip install faiss-cpu==1.15.1)"
            ) from exc
    return backend


# faiss's exact flat search multiplies blocks of 4,096 queries by 1,024 bank rows (its
# defaults) and merges each block into per-query heaps; 8,192 bank rows per block (a 128 MiB
# block of similarities) made KNN's k=50 search about 25% faster here, the same neighbours,
# similarities equal to 1.4e-7 (BLAS rounding of another block shape). Process-wide settings
# of faiss: set around each search and restored.
# The block shape is the scorer option `faiss_blocks` ([queries, bank rows]; null = faiss's
# defaults): another shape rounds similarities differently (up to ~2e-6 in NNGuide's
# scores), so it is part of the eval_id, never a silent change of an eval config's numbers.
FAISS_BLOCK_SETTINGS = ("distance_compute_blas_query_bs", "distance_compute_blas_database_bs")


def check_faiss_blocks(scorer: str, backend: str, blocks: Any) -> tuple[int, int] | None:
    if blocks is None:
        return None
    if backend != "faiss":
        raise ValueError(
            f"{scorer} faiss_blocks needs backend='faiss', got {backend!r} "
            f"(with another backend set faiss_blocks=null)"
        )
    if (
        not isinstance(blocks, (list, tuple))
        or len(blocks) != 2
        or not all(isinstance(b, int) and not isinstance(b, bool) and b > 0 for b in blocks)
    ):
        raise ValueError(
            f"{scorer} faiss_blocks must be [query rows, bank rows] (positive integers) or "
            f"null, got {blocks!r}"
        )
    return int(blocks[0]), int(blocks[1])


def faiss_search(
    index, queries: np.ndarray, k: int, blocks: tuple[int, int] | None = None
) -> np.ndarray:
    """N × k similarities from a faiss index, largest first; with `blocks`, faiss's BLAS
    block sizes set for this search and restored after it (process-wide settings)."""
    import faiss

    if blocks is None:
        return index.search(queries, k)[0]
    before = {name: getattr(faiss.cvar, name) for name in FAISS_BLOCK_SETTINGS}
    try:
        for name, value in zip(FAISS_BLOCK_SETTINGS, blocks, strict=True):
            setattr(faiss.cvar, name, value)
        sims, _ = index.search(queries, k)
    finally:
        for name, value in before.items():
            setattr(faiss.cvar, name, value)
    return sims


class TopSimilarities:
    """Exact top-k inner products of query rows against a bank of rows (both float32)."""

    def __init__(self, bank: np.ndarray, backend: str, blocks: tuple[int, int] | None = None):
        self.bank = np.ascontiguousarray(bank, dtype=np.float32)
        self.backend = backend
        self.blocks = blocks
        if backend == "faiss":
            import faiss

            self.index = faiss.IndexFlatIP(self.bank.shape[1])
            self.index.add(self.bank)
        else:
            # scikit-learn has no max-inner-product search; on its own it would need the
            # bank normalised. Chunked matrix products (never N × N) keep it exact.
            self.index = None

    def search(self, queries: np.ndarray, k: int, chunk: int = 4096) -> np.ndarray:
        """N × k similarities, largest first."""
        queries = np.ascontiguousarray(queries, dtype=np.float32)
        if self.index is not None:
            return faiss_search(self.index, queries, k, self.blocks)
        out = np.empty((len(queries), k), dtype=np.float32)
        for start in range(0, len(queries), chunk):
            sims = queries[start : start + chunk] @ self.bank.T
            top = np.partition(sims, sims.shape[1] - k, axis=1)[:, -k:]
            out[start : start + chunk] = -np.sort(-top, axis=1)
        return out


class KNN(Scorer):
    needs = ("features",)

    def __init__(self, k: int = 50, backend: str = "sklearn", faiss_blocks: Any = None):
        if k < 1:
            raise ValueError(f"knn k must be >= 1, got {k}")
        self.k = k
        self.backend = check_backend("knn", backend)
        self.blocks = check_faiss_blocks("knn", self.backend, faiss_blocks)

    def fit(self, data):
        train = normalise(data.train.features.astype(np.float32))
        self.k_eff = min(self.k, len(train))
        if self.backend == "faiss":
            self.index = TopSimilarities(train, "faiss", self.blocks)
        else:
            self.index = NearestNeighbors(n_neighbors=self.k_eff, algorithm="brute").fit(train)

    def score(self, outputs):
        queries = normalise(outputs.features.astype(np.float32))
        if self.backend == "faiss":
            sims = self.index.search(queries, self.k_eff)[:, -1].astype(np.float64)
            # a unit vector's distance to another: sqrt(2 - 2 cos), clipped at 0 for rounding
            return -np.sqrt(np.maximum(2.0 - 2.0 * sims, 0.0))
        dist, _ = self.index.kneighbors(queries)
        return -dist[:, -1].astype(np.float64)
