"""Temperature scaling (Guo et al., 2017): one T > 0 fitted by NLL on ID validation data;
calibrated logits are logits / T (predictions unchanged)."""

from harness.calibrator import Calibrator
from harness.metrics import fit_temperature


class TemperatureScaling(Calibrator):
    def fit(self, logits, labels):
        self.temperature = fit_temperature(logits, labels)

    def transform(self, logits):
        return logits / self.temperature

    def params(self):
        return {"temperature": self.temperature}
