"""``report.html``: one self-contained page for a clinical reviewer.

Everything is inline: images are base64 ``data:`` URIs, styles are in a ``<style>`` element, and there
is no script, font, or link to anything outside the file, so the page opens offline, from an e-mail
attachment or a USB stick, and shows the same thing everywhere. The model and data cards are
rendered from Markdown (Python-Markdown; raw HTML in a card is shown as text), the data card's YAML
front matter as a table.
"""

from __future__ import annotations

import base64
import html
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..evaluate.roc_grid import grid_shape
from ..frontmatter import front_matter_or_empty
from .card import NOT_A_DEVICE, calibration_lines, score_words, task, too_small
from .findings_report import confusion_table, findings_table, has_any_finding, is_multi, summary_table
from .metric_rows import count, metric_rows

STYLE = """
body{font-family:system-ui,-apple-system,Segoe UI,Helvetica,Arial,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;
color:#222;line-height:1.45}
.warn{background:#fff3cd;border:1px solid #e0c36a;padding:.8em 1em;border-radius:6px;font-weight:600}
.danger{background:#fde2e1;border:2px solid #c0262d;color:#8a1016;padding:.8em 1em;border-radius:6px;font-weight:700}
table{border-collapse:collapse;margin:.5em 0}td,th{border:1px solid #ccc;padding:.35em .7em;text-align:left;vertical-align:top}
thead th{background:#f3f3f3}tbody th{background:#fafafa;font-weight:600;white-space:nowrap}
.metrics{width:100%;table-layout:fixed}.metrics th:first-child{width:36%}.metrics tbody th{white-space:normal}
.metrics th:nth-child(2){width:5em}.metrics td.num{white-space:normal}
.def{display:block;font-size:.85em;color:#555;font-weight:400}.num{font-variant-numeric:tabular-nums;white-space:nowrap}
.grid{display:flex;flex-wrap:wrap;gap:1.2em}.grid figure{margin:0;width:500px}
figure img{width:100%;border:1px solid #ddd}figcaption{font-size:.9em;color:#444}
.example{margin:0;border:1px solid #ddd;border-radius:6px;padding:.6em;width:500px}
.pair{display:flex;gap:.4em}.pair div{flex:1;text-align:center;font-size:.85em;color:#555}.pair img{width:100%}
.example table{font-size:.9em;width:100%}.card{border-left:4px solid #ddd;padding-left:1em}
code{background:#f4f4f4;padding:0 .2em;border-radius:3px;word-break:break-all}
.findings{width:100%;font-size:.92em}.findings td.nan{color:#8a1016}.findings td.note{font-size:.85em;color:#555}
.findings .k{color:#555;font-size:.9em}.confusion td.diag{background:#eef6ee;font-weight:600}
figure.wide{margin:0;width:100%}
"""


@dataclass
class Figure:
    """An image file to inline, with its caption; a saliency example also has the raw image shown
    beside the overlay and the facts of its study (pseudonymous key, score, call, truth)."""

    path: Path
    caption: str
    raw: Path | None = None
    facts: tuple[tuple[str, str], ...] = ()


def data_uri(path: Path) -> str:
    """The PNG at ``path`` as a base64 ``data:`` URI."""
    return "data:image/png;base64," + base64.b64encode(Path(path).read_bytes()).decode("ascii")


def _img(path: Path, alt: str) -> str:
    return f'<img alt="{html.escape(alt)}" src="{data_uri(path)}">'


def _figures(figs: list[Figure]) -> str:
    if not figs:
        return "<p>none</p>"
    items = "".join(f"<figure>{_img(f.path, f.caption)}<figcaption>{html.escape(f.caption)}</figcaption></figure>"
                    for f in figs)
    return f'<div class="grid">{items}</div>'


def _examples(figs: list[Figure]) -> str:
    if not figs:
        return ""
    items = []
    for f in figs:
        # a saliency example: the image beside its overlay, named by its method; a study's attention over its
        # slices (no image beside it) is named by its caption
        method = dict(f.facts).get("saliency", "saliency")
        pair = (f'<div>{_img(f.raw, "image")}<br>image</div><div>{_img(f.path, f.caption)}<br>'
                f'{html.escape(method)} overlay</div>') if f.raw else f"<div>{_img(f.path, f.caption)}</div>"
        facts = "".join(f"<tr><th>{html.escape(k)}</th><td>{html.escape(v)}</td></tr>" for k, v in f.facts)
        items.append(f'<figure class="example"><div class="pair">{pair}</div>'
                     f"<figcaption>{html.escape(f.caption)}</figcaption><table>{facts}</table></figure>")
    return f'<div class="grid">{"".join(items)}</div>'


def _rows(rows: list[tuple[str, str]]) -> str:
    """A two-column table whose first column heads each row (no empty header row)."""
    body = "".join(f"<tr><th>{html.escape(k)}</th><td>{html.escape(v)}</td></tr>" for k, v in rows)
    return f"<table><tbody>{body}</tbody></table>"


def render_markdown(text: str, base_level: int = 3) -> str:
    """Markdown → HTML with tables; headings start at ``<h{base_level}>``; raw HTML is escaped."""
    import markdown

    return markdown.markdown(text.replace("<", "&lt;"), extensions=["tables", "fenced_code", "toc"],
                             extension_configs={"toc": {"baselevel": base_level, "anchorlink": False}})


def render_data_card(text: str) -> str:
    """A data card: its YAML front matter as a table of fields, then its prose rendered."""
    head, body = front_matter_or_empty(text)
    fields = [(str(k).replace("_", " "), ", ".join(map(str, v)) if isinstance(v, list) else str(v))
              for k, v in head.items()]
    return (_rows(fields) if fields else "") + render_markdown(body)


def _metric_table(metrics: dict[str, Any], labels: dict[str, Any]) -> str:
    body = "".join(
        f"<tr><th>{html.escape(r.name)}<span class=\"def\">{html.escape(r.definition)}</span></th>"
        f"<td class=\"num\">{html.escape(r.value)}</td><td class=\"num\">{html.escape(r.counts)}</td>"
        f"<td class=\"num\">{html.escape(r.interval)}</td><td>{html.escape(r.method)}</td></tr>"
        for r in metric_rows(metrics, labels))
    return ("<table class=\"metrics\"><thead><tr><th>metric</th><th>value</th><th>counts</th><th>interval</th><th>interval method</th>"
            f"</tr></thead><tbody>{body}</tbody></table>")


def _confusion(metrics: dict[str, Any], labels: dict[str, Any]) -> str:
    m, abnormal = metrics.get("metrics", {}), labels["abnormal"]
    other = " / ".join(c for c in labels["classes"] if c != abnormal)
    return (f"<table><thead><tr><th>test studies</th><th>truly {html.escape(abnormal)}</th>"
            f"<th>truly {html.escape(other)}</th></tr></thead><tbody>"
            f"<tr><th>called {html.escape(abnormal)}</th><td class=\"num\">{count(m.get('tp'))} (true positives)</td>"
            f"<td class=\"num\">{count(m.get('fp'))} (false positives)</td></tr>"
            f"<tr><th>called {html.escape(other)}</th><td class=\"num\">{count(m.get('fn'))} (false negatives)</td>"
            f"<td class=\"num\">{count(m.get('tn'))} (true negatives)</td></tr></tbody></table>")


def _volume_geometry(volume: dict[str, Any] | None) -> str:
    """How a volume ViT takes its input, for the base model row ('' for a 2D model)."""
    if not volume:
        return ""
    tokens = "a convolutional stem" if volume.get("stem") == "conv" else f"3D patches of {volume.get('tubelet')} slices"
    return f"; a volume ViT: {volume.get('depth')} slices in, {tokens}"


def _details(meta: dict[str, Any], metrics: dict[str, Any]) -> list[tuple[str, str]]:
    """The Model section's rows."""
    base, labels, op = meta["base"], meta["labels"], meta["operating_point"]
    counts = metrics.get("counts", {})
    volume = (meta.get("preprocess", {}).get("view") or {}).get("kind") == "volume"
    aggregate = ("study score = its volume's score, the volume one input" if volume else
                 f"study score = {op.get('aggregate', 'max')} over its images")
    if has_any_finding(labels):
        others = " / ".join(c for c in labels["classes"] if c != labels["abnormal"])
        point = (f"{op['policy']}: study called {labels['abnormal']} when score ≥ {op['threshold']:.4f} "
                 f"({aggregate}; chosen on validation studies)")
        test = (f"{counts.get('n')} studies from {counts.get('n_clusters')} patients: "
                f"{counts.get('n_positive')} {labels['abnormal']}, {counts.get('n_negative')} {others}")
    else:
        point = (f"none: no class is named normal (data.normal), so a study is called the class with the highest "
                 f"score ({aggregate}); each class also has a one-vs-rest threshold ({op['policy']}, chosen on "
                 "validation studies)")
        findings = (metrics.get("multi") or {}).get("findings", [])
        test = (f"{findings[0]['n'] if findings else 'n/a'} studies: "
                + ", ".join(f"{f['n_positive']} {f['name']}" for f in findings))
    return [
        ("task", task(labels)),
        ("base model", f"timm {base['timm_name']} {base.get('timm_kwargs', {})}, source {base['source']}"
                       f"{_volume_geometry(base.get('volume'))}"),
        ("method", str(meta.get("summary") or meta.get("method", "lora"))),
        ("base sha256", base["sha256"]),
        ("output", score_words(meta).replace("`", "")),
        ("operating point", point),
        ("MLflow run", str(meta.get("mlflow_run_id"))),
        ("dataset", f"{meta.get('dataset', {}).get('name')} (fingerprint {meta.get('dataset', {}).get('fingerprint')})"),
        ("test set", test),
    ]


def _binary_performance(metrics: dict[str, Any], labels: dict[str, Any], level: int = 2) -> str:
    """The binary (or "any finding") metric table and the calls at its operating point."""
    sub = f"h{level + 1}"
    return (f"{_metric_table(metrics, labels)}<{sub}>Calls at the operating point</{sub}>{_confusion(metrics, labels)}")


def _multi_performance(meta: dict[str, Any], metrics: dict[str, Any], figure: Figure | None) -> str:
    """Per finding (class), the summaries, the confusion matrix, the ROC small multiples, and "any finding"."""
    labels = meta["labels"]
    word = "finding" if labels["task"] == "multilabel" else "class"
    parts = [f"<h2>Test performance per {word}</h2>",
             f"<p>Each {word} is scored {'on its own' if word == 'finding' else 'one vs rest'} and called at its own "
             "threshold, chosen on validation studies only. Unknown labels are left out of that finding's numbers. "
             "NaN: the metric is undefined for this test set (the note says why).</p>",
             findings_table(metrics, word), "<h3>Summary</h3>", summary_table(metrics)]
    confusion = confusion_table(metrics, list(labels.get("outputs") or []))
    if confusion:
        parts += ["<h3>Confusion matrix of the arg-max call (test studies)</h3>", confusion]
    if figure is not None:
        _, cols = grid_shape(len(labels.get("outputs") or []) or 1)  # about 330 px a panel: text as large as a 5-inch plot's
        parts += [f"<h3>ROC per {word} (test studies)</h3>",
                  f'<figure class="wide" style="max-width:{330 * cols}px">{_img(figure.path, figure.caption)}'
                  f"<figcaption>{html.escape(figure.caption)}</figcaption></figure>"]
    if has_any_finding(labels):
        parts += [f"<h2>{html.escape(labels['abnormal'].capitalize())} vs {html.escape(labels['classes'][0])}</h2>",
                  f"<p>A study's \"{html.escape(labels['abnormal'])}\" score is "
                  + ("its highest finding score" if labels["task"] == "multilabel"
                     else f"1 - P({html.escape(str(labels.get('normal')))})")
                  + "; it is evaluated as a binary task at its own validation-chosen operating point.</p>",
                  _binary_performance(metrics, labels)]
    else:
        parts += ['<h2>No abnormal-vs-normal operating point</h2><p id="no-any-finding">This multi-class model was '
                  "trained without <code>data.normal</code>: no class is named normal, so there is no \"any finding\" "
                  "score, no abnormal-vs-normal operating point, and no sensitivity or specificity of such a call. "
                  "Studies are called by their highest-scoring class (the confusion matrix above); the per-class "
                  "one-vs-rest results are the model's whole evaluation.</p>"]
    return "".join(parts)


def render_report(meta: dict[str, Any], metrics: dict[str, Any], plots: list[Figure], saliency: list[Figure],
                  saliency_note: str, model_card: str, data_card: str | None,
                  findings_figure: Figure | None = None) -> str:
    """The whole report page as a string; ``findings_figure``: the ROC small multiples of a
    multi-label or multi-class model (:func:`medlora.evaluate.roc_grid.plot_roc_grid`)."""
    labels = meta["labels"]
    details = _details(meta, metrics)
    small = too_small(metrics, labels)
    banner = f'<p class="danger" id="too-small">{html.escape(small)}</p>' if small else ""
    notes = list(dict.fromkeys([*metrics.get("warnings", []), *(metrics.get("multi") or {}).get("warnings", [])]))
    warnings = "".join(f"<li>{html.escape(w)}</li>" for w in notes) or "<li>none</li>"
    calibration = "".join(f"<li>{html.escape(line[2:].replace('`', ''))}</li>" for line in calibration_lines(metrics))
    dcard = render_data_card(data_card) if data_card else "<p>No data card was available.</p>"
    performance = (_multi_performance(meta, metrics, findings_figure) if is_multi(labels)
                   else f"<h2>Test performance</h2>{_binary_performance(metrics, labels)}")
    curves = "Curves and calibration (test studies)" if not is_multi(labels) else \
        f"Curves and calibration of {labels['abnormal']} (test studies)" if has_any_finding(labels) else ""
    curves_html = f"<h2>{html.escape(curves)}</h2>{_figures(plots)}" if curves else ""
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width,initial-scale=1">
<title>medlora review: {html.escape(str(meta.get('dataset', {}).get('name')))}</title><style>{STYLE}</style></head>
<body>
{banner}
<h1>Model review: {html.escape(task(labels))}</h1>
<p class="warn">{html.escape(NOT_A_DEVICE)}</p>
<h2>Model</h2>{_rows(details)}
{performance}
<h3>Calibration</h3><ul>{calibration}</ul>
<h3>Evaluation notes</h3><ul>{warnings}</ul>
{curves_html}
<h2>Examples with attention maps</h2>
<p>{html.escape(saliency_note)}</p>{_examples(saliency)}
<h2>Model card</h2><div class="card">{render_markdown(model_card)}</div>
<h2>Data card</h2><div class="card">{dcard}</div>
</body></html>
"""
