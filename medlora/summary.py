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

    def _counts(self, name: str, prefix: str = "test_") -> str:
        """`` (5/5)`` behind a test sensitivity or specificity."""
        tp, fn, tn, fp = (self.metrics.get(f"{prefix}{k}") for k in ("tp", "fn", "tn", "fp"))
        if None in (tp, fn, tn, fp):
            return ""
        hits, total = {f"{prefix}sensitivity": (tp, tp + fn), f"{prefix}specificity": (tn, tn + fp)}.get(name, (None, None))
        return f" ({int(hits)}/{int(total)})" if hits is not None else ""

    def _fmt(self, name: str, prefix: str = "test_", suffix: str = "", label: str | None = None) -> str:
        """``name=value [low, high]`` (+ counts); ``suffix`` is a per-finding ``.<finding>``."""
        value, label = self.metrics.get(name + suffix), label or name
        if value is None or value != value:  # absent or NaN
            return f"{label}=n/a"
        # the rates carry their Wilson interval and counts, as in the review report: a bootstrap interval
        # of a rate collapses to one point with few studies
        kind = "_wilson" if f"{name}_wilson_ci_low{suffix}" in self.metrics else ""
        low, high = self.metrics.get(f"{name}{kind}_ci_low{suffix}"), self.metrics.get(f"{name}{kind}_ci_high{suffix}")
        ci = f" [{low:.3f}, {high:.3f}] {'Wilson' if kind else 'bootstrap'}" if low is not None and high is not None else ""
        return f"{label}={value:.3f}{ci}{self._counts(name, prefix) if not suffix else ''}"

    def _result_lines(self) -> list[str]:
        """Binary: AUROC and the operating point's rates; several findings: macro AUROC, each finding's
        AUROC and, where there is one, the "any finding" evaluation."""
        fmt = self._fmt
        if "test_auroc_macro" not in self.metrics:
            return ["  ".join(fmt(n) for n in ("val_auroc", "test_auroc")),
                    "  ".join(fmt(n) for n in ("test_sensitivity", "test_specificity"))
                    + f"  threshold={self.metrics.get('threshold', float('nan')):.4f}"]
        findings = sorted(k.split(".", 1)[1] for k in self.metrics if k.startswith("test_auroc.")
                          and "_ci_" not in k.split(".", 1)[0])
        lines = ["  ".join([fmt("val_auroc", label="val_auroc (mean over findings)"), fmt("test_auroc_macro"),
                            fmt("test_auroc_micro")])]
        lines.append("test_auroc by finding: " + "  ".join(fmt("test_auroc", suffix=f".{f}", label=f) for f in findings))
        if "test_any_auroc" in self.metrics:
            lines.append("any finding: " + "  ".join(fmt(n, prefix="test_any_") for n in (
                "test_any_auroc", "test_any_sensitivity", "test_any_specificity")))
        for name in ("test_balanced_accuracy", "test_kappa_quadratic"):
            if name in self.metrics:
                lines.append(fmt(name))
        return lines

    def describe(self) -> str:
        lines = [
            f"run {self.run_id} in experiment {self.experiment!r} ({self.tracking_uri})",
            self.params,
            *self._result_lines(),
            "   ".join(f"{name}: {self.out / file}" for name, file in (("adapter", "adapter"), ("metadata", "medlora.json"))
                       if (self.out / file).exists()),
            f"review bundle: {self.out / 'bundle'} (open {self.out / 'bundle' / 'report.html'})"
            if (self.out / "bundle").is_dir() else "",
            f"open the MLflow UI: mlflow ui --backend-store-uri {self.tracking_uri}",
        ]
        return "\n".join(line for line in lines if line)
