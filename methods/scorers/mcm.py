"""MCM, Maximum Concept Matching (Ming et al., 2022): the largest softmax of the cosine
similarities between an example's features and the class vectors, over a temperature T.
For an open_clip zero-shot model (methods/models/clip.py) the head's rows are the class
text embeddings scaled by logit_scale, so the cosines are CLIP's image-text similarities;
on any other model with a linear head it is the same formula on that head's rows."""

import numpy as np
from scipy.special import softmax

from harness.scorer import Scorer
from methods.scorers.knn import normalise


class MCM(Scorer):
    needs = ("features", "head")

    def __init__(self, temperature: float = 1.0):
        if not temperature > 0:
            raise ValueError(f"mcm temperature must be > 0, got {temperature}")
        self.temperature = temperature

    def fit(self, data):
        self.concepts = normalise(data.head.weight.astype(np.float64))

    def score(self, outputs):
        cosine = normalise(outputs.features.astype(np.float64)) @ self.concepts.T
        return softmax(cosine / self.temperature, axis=1).max(axis=1)
