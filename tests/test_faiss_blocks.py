"""KNN / NNGuide's faiss search with larger blocks (methods/scorers/knn.py, the scorer option
`faiss_blocks`): the top-k similarities of a brute-force float64 search, faiss's own settings
restored, and bad values refused."""

from __future__ import annotations

import numpy as np
import pytest

from methods.scorers.knn import KNN, TopSimilarities
from methods.scorers.nnguide import NNGuide

BLOCKS = (4096, 8192)


def test_blocked_faiss_search_is_the_brute_force_top_k_and_restores_faiss():
    import faiss

    rng = np.random.default_rng(0)
    # more bank rows than one block and more queries than one block: the merge across blocks
    bank = rng.normal(size=(BLOCKS[1] + 300, 16))
    queries = rng.normal(size=(BLOCKS[0] + 50, 16))
    before = faiss.cvar.distance_compute_blas_database_bs
    ours = TopSimilarities(bank, "faiss", BLOCKS).search(queries, 7)
    assert faiss.cvar.distance_compute_blas_database_bs == before
    sims = queries @ bank.T
    expected = -np.sort(-sims, axis=1)[:, :7]
    np.testing.assert_allclose(ours, expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("cls", [KNN, NNGuide])
@pytest.mark.parametrize(
    "backend,blocks,message",
    [
        ("sklearn", [4096, 8192], "needs backend='faiss'"),
        ("faiss", [4096], r"\[query rows, bank rows\]"),
        ("faiss", [0, 8192], r"\[query rows, bank rows\]"),
        ("faiss", "big", r"\[query rows, bank rows\]"),
    ],
)
def test_bad_faiss_blocks_are_refused_naming_the_option(cls, backend, blocks, message):
    with pytest.raises(
        ValueError, match=f"faiss_blocks {message}" if "needs" in message else message
    ):
        cls(backend=backend, faiss_blocks=blocks)
