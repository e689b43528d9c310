"""The model card (Mitchell et al., 2019, "Model Cards for Model Reporting") of a bundle, in Markdown.

Written from the bundle's ``medlora.json`` and the run's ``metrics.json`` only, so every number in
it is one the run measured. The sections follow the paper: model details, intended use, factors,
metrics, evaluation data, training data, quantitative analyses, ethical considerations, caveats and
recommendations.
"""

from __future__ import annotations

from typing import Any

NOT_A_DEVICE = ("This model is not a cleared or approved medical device. It has not been evaluated by any "
                "regulator and must not be used to diagnose, treat or triage patients, or to replace the "
                "judgement of a qualified clinician.")
HEADLINE = ("auroc", "auprc", "sensitivity", "specificity", "ppv", "npv", "balanced_accuracy", "brier", "ece")


def fmt(value: Any) -> str:
    return "n/a" if value is None else f"{value:.3f}" if isinstance(value, float) else str(value)


def metric_rows(metrics: dict[str, Any]) -> list[tuple[str, str, str]]:
    """``(name, value, interval)`` rows of the headline test metrics (bootstrap intervals)."""
    m, iv = metrics.get("metrics", {}), metrics.get("intervals", {})
    rows = []
    for name in HEADLINE:
        if name in m:
            low, high = iv.get(name, (None, None))
            rows.append((name, fmt(m[name]), f"[{fmt(low)}, {fmt(high)}]"))
    if "auroc_delong" in iv:
        low, high = iv["auroc_delong"]
        rows.append(("auroc (DeLong interval)", fmt(m.get("auroc")), f"[{fmt(low)}, {fmt(high)}]"))
    return rows


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
    counts, settings = metrics.get("counts", {}), metrics.get("settings", {})
    ci = settings.get("ci", 0.95)
    table = "\n".join(f"| {n} | {v} | {i} |" for n, v, i in metric_rows(metrics))
    warnings = "\n".join(f"- {w}" for w in metrics.get("warnings", [])) or "- none recorded by the evaluation"
    window = pre.get("window", {})
    versions = ", ".join(f"{k} {v}" for k, v in meta.get("versions", {}).items())
    return f"""# Model card: {labels['abnormal']} vs {', '.join(c for c in labels['classes'] if c != labels['abnormal'])} ({ds.get('name', 'dataset')})

> **{NOT_A_DEVICE}**

## Model details
- Architecture: timm `{base['timm_name']}` (kwargs `{base.get('timm_kwargs', {})}`) adapted with LoRA
  (r={lora.get('r')}, alpha={lora.get('alpha')}, targets `{lora.get('targets')}`) using peft; the classifier head is trained and saved with the adapter.
- Base weights: source `{base['source']}`, sha256 `{base['sha256']}`, state sha256 `{base['state_sha256']}`.
{pretrained_line(base)}- Output: the probability of `{labels['abnormal']}` per image, aggregated per study by `{op.get('aggregate', 'max')}`;
  a study is called positive when its score ≥ {op['threshold']:.4f} (operating point `{op['policy']}`, chosen on validation studies only).
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
accuracy, Brier score and expected calibration error (ECE). Intervals are {ci:.0%} patient-clustered,
label-stratified bootstrap intervals ({settings.get('n_bootstrap')} replicates) unless named otherwise.

## Evaluation data
The held-out test split of dataset `{ds.get('name')}`: {counts.get('n')} studies ({counts.get('n_positive')} {labels['abnormal']},
{counts.get('n_negative')} other) from {counts.get('n_clusters')} patients. Splits are by patient; no patient is in two splits.
{('See data_card.md.' if data_card_present else 'No data card was available for this dataset.')}

## Training data
The training split of the same dataset (patient-level, label-stratified split); the validation split chose
the epoch and the operating point. Preprocessing: window `{window.get('mode')}`, input {pre.get('image_size')} px,
mean {pre.get('mean')}, std {pre.get('std')}.

## Quantitative analyses
| metric | test value | {ci:.0%} interval |
|---|---|---|
{table}

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
