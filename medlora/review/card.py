"""The model card (Mitchell et al., 2019, "Model Cards for Model Reporting") of a bundle, in Markdown,
and the words a clinical reader sees in it and in ``report.html``.

Written from the bundle's ``medlora.json`` and the run's ``metrics.json`` only, so every number in
it is one the run measured. The sections follow the paper: model details, intended use, factors,
metrics, evaluation data, training data, quantitative analyses, ethical considerations, caveats and
recommendations.

The metric table is built from :func:`medlora.review.metric_rows.metric_rows` (each row with its
counts and one interval named with its method); a multi-label or multi-class model's per-finding
tables come from :mod:`medlora.review.findings_report`.
"""

from __future__ import annotations

from typing import Any

from .findings_report import findings_markdown, too_small_findings
from .metric_rows import fmt, metric_rows, min_per_class

NOT_A_DEVICE = ("This model is not a cleared or approved medical device. It has not been evaluated by any "
                "regulator and must not be used to diagnose, treat or triage patients, or to replace the "
                "judgement of a qualified clinician.")


def too_small(metrics: dict[str, Any], labels: dict[str, Any]) -> str | None:
    """Why the test set is too small to say anything, or ``None`` when each class has enough studies
    (of "any finding" vs the rest; a multi-class model without ``data.normal``: of every class)."""
    if labels.get("task", "binary") != "binary" and labels.get("abnormal") is None:
        return too_small_findings(metrics)
    c, need = metrics.get("counts", {}), min_per_class(metrics)
    pos, neg = int(c.get("n_positive", 0)), int(c.get("n_negative", 0))
    if min(pos, neg) >= need:
        return None
    other = " / ".join(x for x in labels["classes"] if x != labels["abnormal"])
    return (f"Test set too small to say anything: {pos} {labels['abnormal']} and {neg} {other} test studies, "
            f"fewer than the {need} of each class this report needs (evaluate.min_per_class). The numbers "
            "below describe these few studies only; they are not evidence of how the model performs.")


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
    view = pre.get("view") or {}
    size = pre.get("image_size")
    geometry = base.get("volume") or {}
    tokens = ("a convolutional stem" if geometry.get("stem") == "conv" else
              f"patches of {geometry.get('tubelet')} slices")
    inputs = (f"whole volumes resampled to {view.get('depth')} slices of {size} × {size} px (a 3D ViT, {tokens})"
              if view.get("kind") == "volume" else f"{size} px")
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
the epoch, the operating point and any recalibration. Preprocessing: window `{window.get('mode')}`, input {inputs},
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
    word = "finding" if labels["task"] == "multilabel" else "class (one vs rest)"
    per = f"Per {word}, each at its own validation-chosen threshold:\n\n{findings_markdown(metrics, word)}\n"
    if labels.get("abnormal") is None:
        return (per + "\nNo abnormal-vs-normal evaluation: `data.normal` names no class, so there is no "
                "\"any finding\" score or operating point.\n")
    return per + f"\n\"{labels['abnormal']}\" vs {' / '.join(c for c in labels['classes'] if c != labels['abnormal'])}:\n\n{binary}"
