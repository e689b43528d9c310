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

import yaml

from .card import NOT_A_DEVICE, calibration_lines, count, metric_rows, score_words, task, too_small

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
        pair = (f'<div>{_img(f.raw, "image")}<br>image</div>' if f.raw else "") + \
            f'<div>{_img(f.path, f.caption)}<br>attention overlay</div>'
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
    head, body = {}, text
    lines = text.splitlines()
    if lines and lines[0].strip() == "---":
        end = next((i for i, line in enumerate(lines[1:], start=1) if line.strip() == "---"), None)
        if end is not None:
            loaded = yaml.safe_load("\n".join(lines[1:end]))
            head = loaded if isinstance(loaded, dict) else {}
            body = "\n".join(lines[end + 1:])
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


def render_report(meta: dict[str, Any], metrics: dict[str, Any], plots: list[Figure], saliency: list[Figure],
                  saliency_note: str, model_card: str, data_card: str | None) -> str:
    """The whole report page as a string."""
    base, labels, op = meta["base"], meta["labels"], meta["operating_point"]
    counts = metrics.get("counts", {})
    others = " / ".join(c for c in labels["classes"] if c != labels["abnormal"])
    details = [
        ("task", task(labels)),
        ("base model", f"timm {base['timm_name']} {base.get('timm_kwargs', {})}, source {base['source']}"),
        ("method", str(meta.get("summary") or meta.get("method", "lora"))),
        ("base sha256", base["sha256"]),
        ("output", score_words(meta).replace("`", "")),
        ("operating point", f"{op['policy']}: study called {labels['abnormal']} when score ≥ {op['threshold']:.4f} "
                            f"(study score = {op.get('aggregate', 'max')} over its images; chosen on validation studies)"),
        ("MLflow run", str(meta.get("mlflow_run_id"))),
        ("dataset", f"{meta.get('dataset', {}).get('name')} (fingerprint {meta.get('dataset', {}).get('fingerprint')})"),
        ("test set", f"{counts.get('n')} studies from {counts.get('n_clusters')} patients: "
                     f"{counts.get('n_positive')} {labels['abnormal']}, {counts.get('n_negative')} {others}"),
    ]
    small = too_small(metrics, labels)
    banner = f'<p class="danger" id="too-small">{html.escape(small)}</p>' if small else ""
    warnings = "".join(f"<li>{html.escape(w)}</li>" for w in metrics.get("warnings", [])) or "<li>none</li>"
    calibration = "".join(f"<li>{html.escape(line[2:].replace('`', ''))}</li>" for line in calibration_lines(metrics))
    dcard = render_data_card(data_card) if data_card else "<p>No data card was available.</p>"
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width,initial-scale=1">
<title>medlora review: {html.escape(str(meta.get('dataset', {}).get('name')))}</title><style>{STYLE}</style></head>
<body>
{banner}
<h1>Model review: {html.escape(task(labels))}</h1>
<p class="warn">{html.escape(NOT_A_DEVICE)}</p>
<h2>Model</h2>{_rows(details)}
<h2>Test performance</h2>{_metric_table(metrics, labels)}
<h3>Calls at the operating point</h3>{_confusion(metrics, labels)}
<h3>Calibration</h3><ul>{calibration}</ul>
<h3>Evaluation notes</h3><ul>{warnings}</ul>
<h2>Curves and calibration (test studies)</h2>{_figures(plots)}
<h2>Examples with attention maps</h2>
<p>{html.escape(saliency_note)}</p>{_examples(saliency)}
<h2>Model card</h2><div class="card">{render_markdown(model_card)}</div>
<h2>Data card</h2><div class="card">{dcard}</div>
</body></html>
"""
