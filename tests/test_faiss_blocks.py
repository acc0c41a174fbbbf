"""KNN / NNGuide's faiss search with larger blocks (methods/scorers/knn.py, FAISS_BLOCKS):
the top-k similarities of a brute-force float64 search, and faiss's own settings restored."""

from __future__ import annotations

import numpy as np

from methods.scorers.knn import FAISS_BLOCKS, TopSimilarities


def test_blocked_faiss_search_is_the_brute_force_top_k_and_restores_faiss():
    import faiss

    rng = np.random.default_rng(0)
    # more bank rows than one block and more queries than one block: the merge across blocks
    bank = rng.normal(size=(FAISS_BLOCKS["distance_compute_blas_database_bs"] + 300, 16))
    queries = rng.normal(size=(FAISS_BLOCKS["distance_compute_blas_query_bs"] + 50, 16))
    before = faiss.cvar.distance_compute_blas_database_bs
    ours = TopSimilarities(bank, "faiss").search(queries, 7)
    assert faiss.cvar.distance_compute_blas_database_bs == before
    sims = queries @ bank.T
    expected = -np.sort(-sims, axis=1)[:, :7]
    np.testing.assert_allclose(ours, expected, rtol=1e-5, atol=1e-5)
