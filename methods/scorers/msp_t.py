"""Temperature-scaled MSP (Guo et al., 2017; Hendrycks & Gimpel, 2017): max softmax(z / T).
temperature: null fits T by NLL on ID validation (as the temperature_scaling calibrator
does; on ID train where a run has no val split), a number fixes it."""

from __future__ import annotations

import numpy as np

from harness.metrics import fit_temperature, msp
from harness.scorer import Scorer


class TemperatureMSP(Scorer):
    def __init__(self, temperature: float | None = None):
        if temperature is not None and not temperature > 0:
            raise ValueError(f"msp_t temperature must be > 0 or null, got {temperature}")
        self.temperature = temperature

    def fit(self, data):
        if self.temperature is None:
            fit_on = data.val if data.val is not None else data.train
            self.fitted = float(fit_temperature(fit_on.logits, fit_on.labels))
        else:
            self.fitted = float(self.temperature)

    def score(self, outputs):
        return msp(outputs.logits.astype(np.float64) / self.fitted)
