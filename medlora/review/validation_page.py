"""``validation.html``: a received bundle judged on a site's own studies, for the site's reviewers.

The same visual language as ``report.html`` (its style, metric table and banners; self-contained, no
script or outside link): the bundle and the site, the internal vs external comparison with a verdict per
metric, the site's metrics at the shipped operating point, calibration, where the model does not hold
(score shift, unfamiliar studies, subgroups), and the site adjustment when one was made.
"""

from __future__ import annotations

import html
from pathlib import Path
from typing import Any

from .card import NOT_A_DEVICE, too_small
from .html import STYLE, Figure, _figures, _metric_table, _rows
from .metric_rows import fmt

NAMES = {"auroc": "AUROC", "sensitivity": "Sensitivity", "specificity": "Specificity", "ppv": "PPV", "npv": "NPV",
         "brier": "Brier score", "ece": "ECE"}


def _num(x: Any, digits: int = 3) -> str:
    return "n/a" if x is None else f"{x:.{digits}f}"


def _band(b: Any) -> str:
    return "n/a" if not b or b[0] is None else f"[{b[0]:.3f}, {b[1]:.3f}]"


def _comparison_row(r: dict[str, Any]) -> str:
    p = "" if r.get("p") is None else f", p = {r['p']:.2g}"
    return (f"<tr><th>{html.escape(NAMES.get(r['metric'], r['metric']))}</th>"
            f"<td class=num>{_num(r['internal'])} {_band(r['internal_ci'])}</td>"
            f"<td class=num>{_num(r['external'])} {_band(r['external_ci'])}</td>"
            f"<td class=num>{_num(r['diff'])} {_band(r['diff_ci'])}<span class=def>{html.escape(r['method'] + p)}</span></td>"
            f"<td>{html.escape(r['verdict'])}</td></tr>")


def _comparison_table(rows: list[dict[str, Any]]) -> str:
    head = ("<thead><tr><th>metric</th><th>internal (bundle's test set)</th><th>site</th>"
            "<th>difference (site − internal)</th><th>verdict</th></tr></thead>")
    return f'<table class="metrics">{head}<tbody>{"".join(map(_comparison_row, rows))}</tbody></table>'


def _findings(rows: list[dict[str, Any]]) -> str:
    """Each finding (class) the site labels, at the threshold the bundle shipped for it."""
    if not rows:
        return ""
    head = ("<thead><tr><th>finding</th><th>studies (positive)</th><th>shipped threshold</th><th>AUROC</th>"
            "<th>sensitivity</th><th>specificity</th></tr></thead>")
    body = "".join(
        f"<tr><th>{html.escape(r['finding'])}</th><td class=num>{r.get('n', 0)} ({r.get('n_positive', 0)})</td>"
        f"<td class=num>{_num(r.get('threshold'), 4)}</td>"
        + ("".join(f"<td class=num>{_num(r.get(m))} {_band(r.get(m + '_ci'))}</td>"
                   for m in ("auroc", "sensitivity", "specificity")) if "auroc" in r
           else f"<td colspan=3>{html.escape(r.get('note', ''))}</td>") + "</tr>" for r in rows)
    return (f"<h2>Findings at their shipped thresholds</h2><p>Each finding judged one against the rest at the "
            f"threshold the bundle shipped for it; the rows above are its \"any finding\" score.</p>"
            f"<table class=metrics>{head}<tbody>{body}</tbody></table>")


def _familiarity(fam: dict[str, Any]) -> str:
    if not fam.get("available"):
        return "<p>Not available: the bundle carries no feature statistics of its training studies.</p>"
    rows = [("threshold (distance)", _num(fam["threshold"], 2)),
            ("studies flagged as unfamiliar", f"{fam['n_flagged']} ({fam['flagged_fraction']:.0%})")]
    for side in ("flagged", "unflagged"):
        m = fam.get(side) or {}
        rows.append((f"{side} studies", f"n={int(m.get('n', 0))}: AUROC {_num(m.get('auroc'))}, sensitivity "
                                        f"{_num(m.get('sensitivity'))}, specificity {_num(m.get('specificity'))}"))
    return _rows(rows)


def _adjustment(adj: dict[str, Any] | None) -> str:
    if not adj:
        return ""
    def cells(ev: dict[str, Any]) -> str:
        m, iv = ev["metrics"], ev["intervals"]
        return "".join(f"<td class=num>{_num(m.get(k))} {_band(iv.get('auroc_delong' if k == 'auroc' else k))}</td>"
                       for k in ("auroc", "sensitivity", "specificity", "brier"))
    head = ("<thead><tr><th></th><th>threshold</th><th>AUROC</th><th>sensitivity</th><th>specificity</th>"
            "<th>Brier</th></tr></thead>")
    rows = (f"<tr><th>shipped</th><td class=num>{_num(adj['shipped']['operating_point']['threshold'], 4)}</td>"
            f"{cells(adj['shipped'])}</tr><tr><th>site-adjusted</th>"
            f"<td class=num>{_num(adj['operating_point']['threshold'], 4)}</td>{cells(adj['adjusted'])}</tr>")
    return (f"<h2>Site adjustment</h2><p>Refitted ({', '.join(adj['changed'])}) on a calibration subset of "
            f"{adj['n_calibration_studies']} site studies, and judged on the other studies only (the same studies "
            f"for both rows). The adjusted bundle is written beside this page and names its parent.</p>"
            f"<table class=metrics>{head}<tbody>{rows}</tbody></table>")


def render_validation(doc: dict[str, Any], labels: dict[str, Any], plots: list[Figure], site: str) -> str:
    """The whole page from the validation's ``metrics.json`` document."""
    b = doc["bundle"]
    small = too_small(doc, labels)
    banner = f'<p class="danger">{html.escape(small)}</p>' if small else ""
    shift = doc.get("score_shift") or {}
    facts = [("bundle", b["name"]), ("bundle sha256", b["sha256"]), ("method", b["method"]), ("base", str(b["base"])),
             ("trained on", str(b.get("dataset"))), ("training run", str(b.get("mlflow_run_id"))),
             ("shipped operating point", f"{b['policy']}, threshold {_num(b['threshold'], 4)} (frozen: never re-tuned here)"),
             ("calibration map", str(b["calibration"])), ("site data", site),
             ("site studies evaluated", str(doc["counts"].get("n"))),
             ("files that could not be read (not scored)", str(doc.get("skipped_files", 0)))]
    need = doc.get("threshold_for_internal_sensitivity")
    if need is not None:
        facts.append(("threshold the site would need for the shipped sensitivity", f"{need:.4g} (reported, not applied)"))
    cal = doc.get("calibration_fit") or {}
    calib = _rows([("calibration intercept (in the large; 0 is ideal)", _num(cal.get("intercept"))),
                   ("calibration slope (1 is ideal; < 1: predictions too extreme)", _num(cal.get("slope"))),
                   ("Brier score", _num(doc["metrics"].get("brier"))), ("ECE", _num(doc["metrics"].get("ece")))])
    subgroups = doc.get("subgroups_outside_internal") or []
    sub_html = _rows([(f"{g['column']} = {g['value']} ({g['metric']}, n={g['n']})",
                       f"{g['site']:.3f} outside [{g['internal_low']:.3f}, {g['internal_high']:.3f}]")
                      for g in subgroups]) if subgroups else "<p>No subgroup falls outside the internal interval.</p>"
    notes = "".join(f"<li>{html.escape(n)}</li>" for n in [*doc.get("notes", []), *doc.get("warnings", [])])
    comparison = _comparison_table(doc["comparisons"]) if doc.get("comparisons") else \
        "<p>The bundle carries no internal test predictions to compare with.</p>"
    shift_p = (f"<p>Kolmogorov-Smirnov D = {fmt(shift['ks_statistic'])}, p = {shift['ks_p']:.2g} "
               f"(internal median {fmt(shift['internal_median'])}, site median {fmt(shift['external_median'])}).</p>"
               if shift else "")
    return f"""<!doctype html><html lang="en"><head><meta charset="utf-8">
<title>medlora validation: {html.escape(b['name'])} on {html.escape(site)}</title>
<style>{STYLE}.facts td{{word-break:break-all}}</style></head><body>
<h1>External validation of {html.escape(b['name'])} on {html.escape(site)}</h1>
<p class="warn">{html.escape(NOT_A_DEVICE)}</p>{banner}
<h2>The bundle and the site</h2><div class="facts">{_rows(facts)}</div>
<h2>Internal vs external</h2>{comparison}
<h2>Site performance at the shipped operating point</h2>{_metric_table(doc, labels)}
{_findings(doc.get('findings') or [])}
<h2>Calibration</h2>{calib}
<h2>Where it does not hold</h2><h3>Score distributions</h3>{shift_p}
<h3>Studies unlike the training studies (familiarity)</h3>{_familiarity(doc.get('familiarity') or {})}
<h3>Subgroups outside the internal interval</h3>{sub_html}
{_adjustment(doc.get('site_adjustment'))}
<h2>Figures</h2>{_figures(plots)}
<h2>Notes</h2><ul>{notes or '<li>none</li>'}</ul>
</body></html>"""


def write_page(path: Path, doc: dict[str, Any], labels: dict[str, Any], plots: list[Figure], site: str) -> Path:
    Path(path).write_text(render_validation(doc, labels, plots, site), encoding="utf-8")
    return Path(path)
