"""``report.html``: one self-contained page for a clinical reviewer.

Everything is inline: images are base64 ``data:`` URIs, styles are in a ``<style>`` element, and there
is no script, font, or link to anything outside the file, so the page opens offline, from an e-mail
attachment or a USB stick, and shows the same thing everywhere.
"""

from __future__ import annotations

import base64
import html
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .card import NOT_A_DEVICE, fmt, metric_rows

STYLE = """
body{font-family:system-ui,-apple-system,Segoe UI,Helvetica,Arial,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#222}
.warn{background:#fff3cd;border:1px solid #e0c36a;padding:.8em 1em;border-radius:6px;font-weight:600}
table{border-collapse:collapse;margin:.5em 0}td,th{border:1px solid #ccc;padding:.3em .7em;text-align:left}
th{background:#f3f3f3}.grid{display:flex;flex-wrap:wrap;gap:1em}.grid figure{margin:0;width:320px}
figure img{width:100%;border:1px solid #ddd}figcaption{font-size:.85em;color:#555}
pre{white-space:pre-wrap;background:#fafafa;border:1px solid #eee;padding:1em;font-size:.85em}
"""


@dataclass
class Figure:
    """An image file to inline, with its caption."""

    path: Path
    caption: str


def data_uri(path: Path) -> str:
    """The PNG at ``path`` as a base64 ``data:`` URI."""
    return "data:image/png;base64," + base64.b64encode(Path(path).read_bytes()).decode("ascii")


def _figures(figs: list[Figure]) -> str:
    if not figs:
        return "<p>none</p>"
    items = "".join(f'<figure><img alt="{html.escape(f.caption)}" src="{data_uri(f.path)}">'
                    f"<figcaption>{html.escape(f.caption)}</figcaption></figure>" for f in figs)
    return f'<div class="grid">{items}</div>'


def _table(rows: list[tuple[str, ...]], header: tuple[str, ...]) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in r) + "</tr>" for r in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def render_report(meta: dict[str, Any], metrics: dict[str, Any], plots: list[Figure], saliency: list[Figure],
                  saliency_note: str, model_card: str, data_card: str | None) -> str:
    """The whole report page as a string."""
    base, labels, op = meta["base"], meta["labels"], meta["operating_point"]
    counts = metrics.get("counts", {})
    m = metrics.get("metrics", {})
    details = [
        ("task", f"{labels['abnormal']} vs other ({', '.join(labels['classes'])})"),
        ("base model", f"timm {base['timm_name']} {base.get('timm_kwargs', {})}, source {base['source']}"),
        ("base sha256", base["sha256"]),
        ("operating point", f"{op['policy']}: study called {labels['abnormal']} when score ≥ {op['threshold']:.4f} "
                            f"(study score = {op.get('aggregate', 'max')} over its images)"),
        ("MLflow run", str(meta.get("mlflow_run_id"))),
        ("dataset", f"{meta.get('dataset', {}).get('name')} (fingerprint {meta.get('dataset', {}).get('fingerprint')})"),
        ("test set", f"{counts.get('n')} studies: {counts.get('n_positive')} {labels['abnormal']}, {counts.get('n_negative')} other"),
        ("confusion at the operating point", f"TP {fmt(m.get('tp'))}, FP {fmt(m.get('fp'))}, TN {fmt(m.get('tn'))}, FN {fmt(m.get('fn'))}"),
    ]
    warnings = "".join(f"<li>{html.escape(w)}</li>" for w in metrics.get("warnings", [])) or "<li>none</li>"
    card = html.escape(model_card)
    dcard = f"<pre>{html.escape(data_card)}</pre>" if data_card else "<p>No data card was available.</p>"
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width,initial-scale=1">
<title>medlora review: {html.escape(str(meta.get('dataset', {}).get('name')))}</title><style>{STYLE}</style></head>
<body>
<h1>Model review: {html.escape(labels['abnormal'])} detection</h1>
<p class="warn">{html.escape(NOT_A_DEVICE)}</p>
<h2>Model</h2>{_table(details, ("", ""))}
<h2>Test performance</h2>{_table(metric_rows(metrics), ("metric", "value", "interval"))}
<h3>Evaluation notes</h3><ul>{warnings}</ul>
<h2>Curves and calibration (test studies)</h2>{_figures(plots)}
<h2>Examples with attention maps</h2>
<p>{html.escape(saliency_note)}</p>{_figures(saliency)}
<h2>Model card</h2><pre>{card}</pre>
<h2>Data card</h2>{dcard}
</body></html>
"""
