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

    def describe(self) -> str:
        def fmt(name: str) -> str:
            value = self.metrics.get(name)
            if value is None:
                return f"{name}=n/a"
            low, high = self.metrics.get(f"{name}_ci_low"), self.metrics.get(f"{name}_ci_high")
            ci = f" [{low:.3f}, {high:.3f}]" if low is not None and high is not None else ""
            return f"{name}={value:.3f}{ci}"

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
