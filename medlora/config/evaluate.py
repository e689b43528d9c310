"""The ``evaluate:`` section: operating point, confidence intervals, subgroups, calibration."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator

from .base import Strict


class EvaluateConfig(Strict):
    """How the test split is scored; every choice is made on validation studies only."""

    operating_point: str = Field(
        "youden", description="`youden`, `sensitivity:0.95`, `specificity:0.90` — chosen on validation only")
    bootstrap: int = Field(2000, ge=0, description="resamples of the patient-clustered stratified bootstrap")
    ci: float = Field(0.95, gt=0, lt=1, description="coverage of the bootstrap confidence intervals")
    subgroups: list[str] = Field(
        default_factory=list, description="fields to report metrics per value of: `sex`, `age_band`, "
        "`manufacturer`, `view_position` (DICOM headers, recorded at ingest), `modality`, or any labels-CSV column; "
        "a field no study has is an error")
    calibration: Literal["none", "temperature", "platt"] = Field(
        "none", description="`temperature` or `platt`: recalibrate study scores with a map fitted on validation "
        "studies only (binary task only; refused for `pipeline: oneclass`, distances are not probabilities, and for "
        "multiclass/multilabel, whose per-finding scores are not recalibrated)")
    min_per_class: int = Field(
        10, ge=1, description="a test set with fewer studies in a class makes the bundle say so in red at the top of "
        "`report.html`, and `medlora export` warn (`--strict` refuses); multiclass/multilabel: of \"any finding\"")

    @field_validator("operating_point")
    @classmethod
    def _policy(cls, v: str) -> str:
        name, _, value = v.partition(":")
        if name == "youden" and not value:
            return v
        if name in {"sensitivity", "specificity"}:
            try:
                target = float(value)
            except ValueError:
                target = -1.0
            if 0 < target < 1:
                return v
        raise ValueError(f"evaluate.operating_point={v!r}; allowed: youden, sensitivity:T, specificity:T (0<T<1)")
