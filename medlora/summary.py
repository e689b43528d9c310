"""What a pipeline run returns and prints."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path


@dataclass
class RunSummary:
    run_id: str
    experiment: str
    tracking_uri: str
    out: Path
    metrics: dict[str, float] = field(default_factory=dict)
    params: str = ""

    def _counts(self, name: str) -> str:
        """`` (5/5)`` behind a test sensitivity or specificity."""
        tp, fn, tn, fp = (self.metrics.get(f"test_{k}") for k in ("tp", "fn", "tn", "fp"))
        if None in (tp, fn, tn, fp):
            return ""
        hits, total = {"test_sensitivity": (tp, tp + fn), "test_specificity": (tn, tn + fp)}.get(name, (None, None))
        return f" ({int(hits)}/{int(total)})" if hits is not None else ""

    def describe(self) -> str:
        def fmt(name: str) -> str:
            value = self.metrics.get(name)
            if value is None:
                return f"{name}=n/a"
            # the rates carry their Wilson interval and counts, as in the review report: a bootstrap interval
            # of a rate collapses to one point with few studies
            kind = "_wilson" if f"{name}_wilson_ci_low" in self.metrics else ""
            low, high = self.metrics.get(f"{name}{kind}_ci_low"), self.metrics.get(f"{name}{kind}_ci_high")
            ci = f" [{low:.3f}, {high:.3f}]{' Wilson' if kind else ''}" if low is not None and high is not None else ""
            return f"{name}={value:.3f}{ci}{self._counts(name)}"

        lines = [
            f"run {self.run_id} in experiment {self.experiment!r} ({self.tracking_uri})",
            self.params,
            "  ".join(fmt(n) for n in ("val_auroc", "test_auroc")),
            "  ".join(fmt(n) for n in ("test_sensitivity", "test_specificity")) + f"  threshold={self.metrics.get('threshold', float('nan')):.4f}",
            f"adapter: {self.out / 'adapter'}   metadata: {self.out / 'medlora.json'}",
            f"review bundle: {self.out / 'bundle'} (open {self.out / 'bundle' / 'report.html'})"
            if (self.out / "bundle").is_dir() else "",
            f"open the MLflow UI: mlflow ui --backend-store-uri {self.tracking_uri}",
        ]
        return "\n".join(line for line in lines if line)
