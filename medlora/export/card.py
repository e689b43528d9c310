"""The model card (Mitchell et al., 2019, "Model Cards for Model Reporting") of a bundle, in Markdown,
and the metric rows a clinical reader sees in it and in ``report.html``.

Written from the bundle's ``medlora.json`` and the run's ``metrics.json`` only, so every number in
it is one the run measured. The sections follow the paper: model details, intended use, factors,
metrics, evaluation data, training data, quantitative analyses, ethical considerations, caveats and
recommendations.

Each metric row carries a human name, a one-line definition, the counts behind a rate ("5/5") and
one interval named with its method: Wilson for sensitivity, specificity, PPV and NPV (a bootstrap
interval of a rate collapses to a point on a handful of cases), DeLong for AUROC, the
patient-clustered bootstrap for the rest. An interval of zero width from a test set below
``evaluate.min_per_class`` is not shown as if it meant something.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..evaluate.intervals import wilson_interval

NOT_A_DEVICE = ("This model is not a cleared or approved medical device. It has not been evaluated by any "
                "regulator and must not be used to diagnose, treat or triage patients, or to replace the "
                "judgement of a qualified clinician.")
DEFAULT_MIN_PER_CLASS = 10  # metrics.json written before evaluate.min_per_class existed
HEADLINE = ("auroc", "auprc", "sensitivity", "specificity", "ppv", "npv", "balanced_accuracy", "brier", "ece")
NAMES = {  # metric → (human name, one-line definition)
    "auroc": ("AUROC (area under the ROC curve)",
              "Chance that a random abnormal study scores higher than a random normal one (0.5 = coin flip)."),
    "auprc": ("AUPRC (average precision)",
              "Precision averaged over every sensitivity level; compare it with the share of abnormal studies."),
    "sensitivity": ("Sensitivity", "Share of abnormal studies the model calls abnormal."),
    "specificity": ("Specificity", "Share of normal studies the model calls normal."),
    "ppv": ("Positive predictive value (PPV)",
            "Share of studies called abnormal that are abnormal; depends on how common abnormal studies are."),
    "npv": ("Negative predictive value (NPV)",
            "Share of studies called normal that are normal; depends on how common abnormal studies are."),
    "balanced_accuracy": ("Balanced accuracy", "Mean of sensitivity and specificity."),
    "brier": ("Brier score", "Mean squared gap between score and outcome (0 is perfect; 0.25 is always saying 50 %)."),
    "ece": ("Expected calibration error (ECE)",
            "Average gap between the score and the observed share of abnormal studies, over 10 score bins."),
}
# rates: (numerator, denominator terms) of the confusion counts, with a Wilson interval
RATES = {"sensitivity": ("tp", ("tp", "fn")), "specificity": ("tn", ("tn", "fp")),
         "ppv": ("tp", ("tp", "fp")), "npv": ("tn", ("tn", "fn"))}


def fmt(value: Any) -> str:
    return "n/a" if value is None else f"{value:.3f}" if isinstance(value, float) else str(value)


def count(value: Any) -> str:
    """A confusion count as an integer (metrics.json stores them as floats)."""
    return "n/a" if value is None else str(int(round(float(value))))


@dataclass(frozen=True)
class MetricRow:
    """One line of the test-performance table."""

    key: str
    name: str
    definition: str
    value: str
    counts: str
    interval: str  # "[low, high]", or why there is none
    method: str  # how the interval was computed, e.g. "95% Wilson"


def min_per_class(metrics: dict[str, Any]) -> int:
    return int(metrics.get("settings", {}).get("min_per_class", DEFAULT_MIN_PER_CLASS))


def too_small(metrics: dict[str, Any], labels: dict[str, Any]) -> str | None:
    """Why the test set is too small to say anything, or ``None`` when each class has enough studies
    (of "any finding" vs the rest; a multi-class model without ``data.normal``: of every class)."""
    if labels.get("task", "binary") != "binary" and labels.get("abnormal") is None:
        from .findings_report import too_small_findings

        return too_small_findings(metrics)
    c, need = metrics.get("counts", {}), min_per_class(metrics)
    pos, neg = int(c.get("n_positive", 0)), int(c.get("n_negative", 0))
    if min(pos, neg) >= need:
        return None
    other = " / ".join(x for x in labels["classes"] if x != labels["abnormal"])
    return (f"Test set too small to say anything: {pos} {labels['abnormal']} and {neg} {other} test studies, "
            f"fewer than the {need} of each class this report needs (evaluate.min_per_class). The numbers "
            "below describe these few studies only; they are not evidence of how the model performs.")


def _interval(low: Any, high: Any, n: int, need: int) -> str:
    if low is None or high is None:
        return "not available"
    if low == high and n < need:
        return "not estimable from so few studies"
    return f"[{fmt(low)}, {fmt(high)}]"


def metric_rows(metrics: dict[str, Any], labels: dict[str, Any] | None = None) -> list[MetricRow]:
    """The headline test metrics, each with its counts and one labelled interval (``labels``: the
    ``medlora.json`` labels, naming the classes in the counts)."""
    m, iv, settings = metrics.get("metrics", {}), metrics.get("intervals", {}), metrics.get("settings", {})
    c, need = metrics.get("counts", {}), min_per_class(metrics)
    ci = float(settings.get("ci", 0.95))
    n_small = min(int(c.get("n_positive", 0)), int(c.get("n_negative", 0)))
    boot = f"{ci:.0%} bootstrap, patient-clustered ({settings.get('n_bootstrap')} resamples)"
    abnormal, other = "abnormal", "normal"
    if labels:
        abnormal, other = labels["abnormal"], " / ".join(x for x in labels["classes"] if x != labels["abnormal"])
    study_counts = f"{c.get('n_positive')} {abnormal}, {c.get('n_negative')} {other} studies"
    rows = []
    for key in HEADLINE:
        if key not in m:
            continue
        name, definition = NAMES[key]
        if key in RATES:
            num, den = RATES[key]
            k, n = int(round(m.get(num) or 0)), sum(int(round(m.get(d) or 0)) for d in den)
            low, high = wilson_interval(k, n, ci) if n else (None, None)
            rows.append(MetricRow(key, name, definition, fmt(m[key]) if n else "undefined", f"{k}/{n}",
                                  _interval(low, high, n, 1) if n else "no studies to count", f"{ci:.0%} Wilson"))
        elif key == "auroc" and "auroc_delong" in iv:
            low, high = iv["auroc_delong"]
            rows.append(MetricRow(key, name, definition, fmt(m[key]), study_counts, _interval(low, high, n_small, need),
                                  f"{ci:.0%} DeLong"))
        else:
            low, high = iv.get(key, (None, None))
            rows.append(MetricRow(key, name, definition, fmt(m[key]), study_counts, _interval(low, high, n_small, need),
                                  boot))
    return rows


def is_calibrated(meta: dict[str, Any]) -> bool:
    return (meta.get("calibration") or {}).get("method", "none") != "none"


def score_words(meta: dict[str, Any]) -> str:
    """What a study's number is: a probability only when a calibration map was fitted."""
    cal, abnormal, labels = meta.get("calibration") or {}, meta["labels"]["abnormal"], meta["labels"]
    if labels.get("task", "binary") != "binary":
        each = "one sigmoid per finding" if labels["task"] == "multilabel" else "the softmax over the classes"
        summary = (f"; `{abnormal}` is scored by " + ("the highest finding score" if labels["task"] == "multilabel"
                                                      else f"1 - P(`{labels.get('normal')}`)")
                   if abnormal is not None else "; there is no abnormal-vs-normal score")
        return (f"a score in [0, 1] per {'finding' if labels['task'] == 'multilabel' else 'class'} ({each}, not "
                f"calibrated: ranking scores, not probabilities){summary}")
    if is_calibrated(meta):
        return (f"the probability of `{abnormal}` per study ({cal['method']} scaling of the study score, fitted on "
                "validation studies only)")
    return (f"a score in [0, 1] for `{abnormal}` (the network's softmax output, not calibrated: a ranking score, "
            "not a probability)")


def calibration_lines(metrics: dict[str, Any]) -> list[str]:
    """Markdown bullets on the recalibration and the test Brier/ECE before and after it."""
    cal = metrics.get("calibration") or {}
    if cal.get("method", "none") == "none":
        return ["- No recalibration (`evaluate.calibration: none`): scores are not probabilities."]
    fitted = (f"temperature T = {cal['temperature']:.3f}" if cal["method"] == "temperature"
              else f"slope {cal['slope']:.3f}, intercept {cal['intercept']:.3f} on the score's logit")
    return [f"- {cal['method'].capitalize()} scaling fitted on validation studies only: {fitted}.",
            f"- Validation log-loss {fmt(cal.get('val_log_loss_before'))} before, {fmt(cal.get('val_log_loss_after'))} after.",
            f"- Test Brier score {fmt(cal.get('test_brier_before'))} before, {fmt(cal.get('test_brier_after'))} after; "
            f"test ECE {fmt(cal.get('test_ece_before'))} before, {fmt(cal.get('test_ece_after'))} after."]


def task(labels: dict[str, Any]) -> str:
    """``abnormal vs normal`` (the other classes joined); a multi-label or multi-class model names its
    task and outputs."""
    kind = labels.get("task", "binary")
    if kind != "binary":
        outputs = labels.get("outputs") or []
        word = "findings" if kind == "multilabel" else "classes"
        return f"{kind}, {len(outputs)} {word} ({', '.join(outputs)})"
    return f"{labels['abnormal']} vs {' / '.join(c for c in labels['classes'] if c != labels['abnormal'])}"


def call_words(meta: dict[str, Any]) -> str:
    """How a study is called: at the abnormal / any-finding threshold, or by its arg-max class."""
    labels, op = meta["labels"], meta["operating_point"]
    how = (f"(operating point `{op['policy']}`, chosen on validation studies only)")
    if labels.get("abnormal") is None:
        return ("a study is called the class with the highest score (arg-max); each class also has its own "
                f"one-vs-rest threshold {how}. There is no abnormal-vs-normal call: `data.normal` names no class.")
    line = f"a study is called `{labels['abnormal']}` when its score ≥ {op['threshold']:.4f} {how}"
    if labels.get("task", "binary") != "binary":
        line += "; each finding is also called at its own threshold (listed under Quantitative analyses)"
    return line + "."


def modality_line(ds: dict[str, Any]) -> str:
    """The modalities of the run's samples; ``unknown`` is said out loud (NIfTI files carry none)."""
    found = ds.get("modalities") or {}
    if not found:
        return ""
    line = "Modalities (samples of all splits): " + ", ".join(f"{m} ({n})" for m, n in sorted(found.items())) + "."
    if "unknown" in found:
        line += (" `unknown`: the files carry no modality (NIfTI) and neither `data.modality` nor the data card "
                 "names one.")
    return line + "\n"


def pretrained_line(base: dict[str, Any]) -> str:
    """The model-details line citing a base medlora pretrained (empty for other bases)."""
    pre = base.get("pretrain")
    if not pre:
        return ""
    data, how = pre.get("data", {}), pre.get("pretraining", {})
    return (f"- Base pretraining: {how.get('method')} pretrained by medlora on {data.get('images')} unlabelled images of "
            f"`{data.get('name')}` ({data.get('used')}; fingerprint `{data.get('fingerprint')}`), {how.get('epochs')} "
            f"epochs, mask ratio {how.get('mask_ratio')}; MLflow run `{pre.get('mlflow_run_id')}`; base card "
            f"`{pre.get('card')}`.\n")


def model_card(meta: dict[str, Any], metrics: dict[str, Any], data_card_present: bool) -> str:
    """The Markdown model card of a bundle."""
    base, labels, op = meta["base"], meta["labels"], meta["operating_point"]
    pre, lora, ds = meta["preprocess"], meta.get("lora") or {}, meta.get("dataset", {})
    settings = {**metrics.get("settings", {}), **(metrics.get("multi") or {}).get("settings", {})}
    table = "\n".join(f"| {r.name} | {r.value} | {r.counts} | {r.interval} ({r.method}) |" for r in metric_rows(metrics, labels))
    quantitative = _quantitative(metrics, labels, table)
    warnings = "\n".join(f"- {w}" for w in metrics.get("warnings", [])) or "- none recorded by the evaluation"
    small = too_small(metrics, labels)
    banner = f"\n> **{small}**\n" if small else ""
    window = pre.get("window", {})
    versions = ", ".join(f"{k} {v}" for k, v in meta.get("versions", {}).items())
    adapted = (f"adapted with LoRA (r={lora.get('r')}, alpha={lora.get('alpha')}, targets `{lora.get('targets')}`) "
               "using peft; the classifier head is trained and saved with the adapter" if lora else
               f"trained as a {meta.get('summary') or meta.get('method')}")
    calibration = "\n".join(calibration_lines(metrics))
    return f"""# Model card: {task(labels)} ({ds.get('name', 'dataset')})

> **{NOT_A_DEVICE}**
{banner}
## Model details
- Architecture: timm `{base['timm_name']}` (kwargs `{base.get('timm_kwargs', {})}`) {adapted}.
- Base weights: source `{base['source']}`, sha256 `{base['sha256']}`, state sha256 `{base['state_sha256']}`.
{pretrained_line(base)}- Output: {score_words(meta)}. Image scores are aggregated per study by `{op.get('aggregate', 'max')}`;
  {call_words(meta)}
- Provenance: MLflow run `{meta.get('mlflow_run_id')}`, medlora commit `{meta.get('git_commit')}`, dataset fingerprint `{ds.get('fingerprint')}`.
- Software: {versions}.

## Intended use
- Research and clinical *review* of the adaptation: reading its metrics, failure examples and saliency maps.
- Scoring new studies offline with `medlora predict` for research, under the same preprocessing and operating point.

### Out-of-scope uses
- Any diagnostic, screening, triage or treatment decision about a patient.
- Data from another modality, body part, scanner protocol or population than the evaluation data below,
  without a new local evaluation.
- Changing the threshold or preprocessing without re-evaluating.

## Factors
Performance can vary with scanner, site, acquisition protocol, windowing (`{window.get('mode')}` window here),
patient age, sex and disease prevalence. {('Subgroup results are in metrics.json.' if metrics.get('subgroups') else 'No subgroup analysis was run for this model.')}

## Metrics
AUROC and AUPRC (ranking), sensitivity, specificity, PPV and NPV at the frozen operating point, balanced
accuracy, Brier score and expected calibration error (ECE). Each interval is named with its method:
Wilson score intervals for the four rates (from the counts shown), DeLong for AUROC, a patient-clustered,
label-stratified bootstrap ({settings.get('n_bootstrap')} resamples) for the rest.

## Evaluation data
The held-out test split of dataset `{ds.get('name')}`: {_test_counts(metrics, labels)}. Splits are by patient; no patient is in two splits.
{modality_line(ds)}{('See the data card.' if data_card_present else 'No data card was available for this dataset.')}

## Training data
The training split of the same dataset (patient-level, label-stratified split); the validation split chose
the epoch, the operating point and any recalibration. Preprocessing: window `{window.get('mode')}`, input {pre.get('image_size')} px,
mean {pre.get('mean')}, std {pre.get('std')}.

## Quantitative analyses
{quantitative}

Calibration:
{calibration}

Evaluation notes:
{warnings}

## Ethical considerations
Study keys in this bundle are HMAC-SHA256 pseudonyms under a site secret; no patient identifier, name, date or DICOM UID is included,
and the bundle was scanned for them before it was written. Saliency overlays are pixel renderings without
identifiers. Errors of a screening-like model fall unevenly: false negatives delay care, false positives cause
extra work-up; review both kinds of examples in report.html.

## Caveats and recommendations
- Small test sets give wide intervals: read the intervals, not the point estimates.
- Attention-rollout maps show where the model attended, not why; they are not a localisation claim.
- Re-evaluate locally before any use on new data; check that `medlora predict` refuses a different base.
- {NOT_A_DEVICE}
"""


def _test_counts(metrics: dict[str, Any], labels: dict[str, Any]) -> str:
    counts = metrics.get("counts", {})
    if labels.get("abnormal") is not None:
        return (f"{counts.get('n')} studies ({counts.get('n_positive')} {labels['abnormal']},\n"
                f"{counts.get('n_negative')} other) from {counts.get('n_clusters')} patients")
    findings = (metrics.get("multi") or {}).get("findings", [])
    per_class = ", ".join(f"{f['n_positive']} {f['name']}" for f in findings)
    return f"{findings[0]['n'] if findings else 'n/a'} studies ({per_class})"


def _quantitative(metrics: dict[str, Any], labels: dict[str, Any], table: str) -> str:
    """The card's numbers: the binary (or "any finding") table, and per finding for multi-output models."""
    binary = f"| metric | test value | counts | interval (method) |\n|---|---|---|---|\n{table}\n"
    if labels.get("task", "binary") == "binary":
        return binary
    from .findings_report import findings_markdown

    word = "finding" if labels["task"] == "multilabel" else "class (one vs rest)"
    per = f"Per {word}, each at its own validation-chosen threshold:\n\n{findings_markdown(metrics, word)}\n"
    if labels.get("abnormal") is None:
        return (per + "\nNo abnormal-vs-normal evaluation: `data.normal` names no class, so there is no "
                "\"any finding\" score or operating point.\n")
    return per + f"\n\"{labels['abnormal']}\" vs {' / '.join(c for c in labels['classes'] if c != labels['abnormal'])}:\n\n{binary}"
