"""A self-contained HTML benchmark report: inline SVG plots, no script, no network.

Sections: settings and warnings; per-metric bars (each run next to its size-matched human
counterpart); label distribution; length histograms; a 2-D embedding map (PCA of the embeddings);
sample examples with their source passages; metrics that could not be computed, with the reason.
"""

from __future__ import annotations

import html
import json

import numpy as np

from engine.metrics.bench import HUMAN_KEY, BenchResult
from engine.metrics.report import headline_rows
from engine.metrics.students import FINETUNED, STUDENTS

__all__ = ["render_html"]

PALETTE = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#17becf"]
HUMAN = "#7f7f7f"
CSS = """body{font:14px/1.4 system-ui,sans-serif;margin:24px;max-width:1200px;color:#222}
h1{font-size:22px}h2{font-size:18px;margin-top:32px;border-bottom:1px solid #ddd}
.grid{display:flex;flex-wrap:wrap;gap:12px}.card{border:1px solid #e3e3e3;border-radius:6px;padding:6px}
table{border-collapse:collapse;font-size:13px}td,th{border:1px solid #ddd;padding:4px 6px;vertical-align:top;text-align:left}
.warn{color:#a15c00}.muted{color:#777}.legend span{display:inline-block;margin-right:12px}
.sw{display:inline-block;width:10px;height:10px;margin-right:4px}"""


def _e(text) -> str:
    return html.escape(str(text))


def _fmt(value) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return "n/a" if value is None else _e(value)


def _legend(names: list[str]) -> str:
    items = [f'<span><i class="sw" style="background:{_color(i, n)}"></i>{_e(n)}</span>' for i, n in enumerate(names)]
    return f'<p class="legend">{"".join(items)}</p>'


def _color(index: int, name: str) -> str:
    return HUMAN if name == HUMAN_KEY or name.startswith("human (") else PALETTE[index % len(PALETTE)]


def _bars(title: str, bars: list[tuple[str, str, float | None]], width: int = 270, height: int = 150) -> str:
    """A bar chart: bars are (label, colour, value); a missing value is drawn as 'n/a'."""
    values = [v for _, _, v in bars if isinstance(v, float)]
    top = max([abs(v) for v in values] or [1.0]) or 1.0
    step = (width - 20) / max(1, len(bars))
    parts = [f'<text x="4" y="12" font-size="12" font-weight="600">{_e(title)}</text>']
    base = height - 18
    for i, (label, colour, value) in enumerate(bars):
        x = 10 + i * step
        if not isinstance(value, float):
            parts.append(f'<text x="{x + 2:.1f}" y="{base - 4}" font-size="10" fill="#999">n/a<title>{_e(label)}</title></text>')
            continue
        h = (base - 34) * abs(value) / top  # headroom: the value label stays clear of the title
        parts.append(f'<rect x="{x:.1f}" y="{base - h:.1f}" width="{step * 0.8:.1f}" height="{h:.1f}" fill="{colour}">'
                     f'<title>{_e(label)}: {value:.4g}</title></rect>')
        parts.append(f'<text x="{x:.1f}" y="{base - h - 2:.1f}" font-size="9">{value:.3g}</text>')
    return f'<svg class="card" width="{width}" height="{height}" role="img">{"".join(parts)}</svg>'


def _metric_section(report: dict) -> str:
    names = [run["name"] for run in report["runs"]]
    charts = []
    for label, pairs in headline_rows(report):
        bars = []
        for i, (name, (syn, hum)) in enumerate(zip(names, pairs)):
            bars.append((name, _color(i, name), syn if isinstance(syn, float) else None))
            bars.append((f"human, matched to {name}", HUMAN, hum if isinstance(hum, float) else None))
        charts.append(_bars(label, bars))
    legend = _legend(names + ["human (size- and label-matched sample; for students: the gold ceiling)"])
    return f'<h2>Metrics: each run next to its human counterpart</h2>{legend}<div class="grid">{"".join(charts)}</div>'


def _labels_section(report: dict) -> str:
    sets = [(run["name"], run["labels"]) for run in report["runs"]] + [("human reference", report["reference"]["labels"])]
    labels = sorted({label for _, counts in sets for label in counts})
    charts = []
    for label in labels[:40]:
        bars = []
        for i, (name, counts) in enumerate(sets):
            total = sum(counts.values()) or 1
            bars.append((name, _color(i, name), counts.get(label, 0) / total))
        charts.append(_bars(f"share of label {label}", bars, width=200, height=130))
    more = f'<p class="muted">{len(labels) - 40} more labels not drawn</p>' if len(labels) > 40 else ""
    return f'<h2>Label distribution</h2>{_legend([n for n, _ in sets])}<div class="grid">{"".join(charts)}</div>{more}'


def _histogram(title: str, series: list[tuple[str, str, list[int]]], width: int = 380, height: int = 170) -> str:
    everything = [v for _, _, vals in series for v in vals] or [0]
    edges = np.histogram_bin_edges(everything, bins=min(30, max(1, len(set(everything)))))
    hists = [(name, colour, np.histogram(vals, bins=edges)[0] / max(1, len(vals))) for name, colour, vals in series]
    top = max(float(h.max()) for _, _, h in hists) or 1.0
    x0, base, span = 30, height - 22, width - 40
    parts = [f'<text x="4" y="12" font-size="12" font-weight="600">{_e(title)}</text>']
    for name, colour, h in hists:
        points = []
        for k, share in enumerate(h):
            y = base - (base - 20) * share / top
            points += [f"{x0 + span * k / len(h):.1f},{y:.1f}", f"{x0 + span * (k + 1) / len(h):.1f},{y:.1f}"]
        parts.append(f'<polyline fill="none" stroke="{colour}" stroke-width="2" points="{" ".join(points)}"><title>{_e(name)}</title></polyline>')
    parts.append(f'<text x="{x0}" y="{height - 6}" font-size="10">{edges[0]:.0f}</text>'
                 f'<text x="{x0 + span}" y="{height - 6}" font-size="10" text-anchor="end">{edges[-1]:.0f} tokens</text>')
    return f'<svg class="card" width="{width}" height="{height}" role="img">{"".join(parts)}</svg>'


def _students_section(report: dict) -> str:
    """Per student: each run's recall per label on the test split beside the gold ceiling's, and its top confusions."""
    tables = []
    for kind in STUDENTS + (FINETUNED,):
        sides = [(run["name"], run["metrics"].get("students", {}).get(kind, {})) for run in report["runs"]]
        sides = [(name, student) for name, student in sides if isinstance(student.get("synthetic"), dict)]
        labels = sorted({label for _, st in sides for label in st["synthetic"].get("recall_per_label", {})})
        if not labels:
            continue
        head = "".join(f"<th>{_e(name)}</th><th>gold</th>" for name, _ in sides)
        rows = []
        for label in labels:
            cells = "".join(f"<td>{_fmt(st['synthetic'].get('recall_per_label', {}).get(label))}</td>"
                            f"<td class=\"muted\">{_fmt((st.get('human') or {}).get('recall_per_label', {}).get(label))}</td>"
                            for _, st in sides)
            rows.append(f"<tr><td>{_e(label)}</td>{cells}</tr>")
        errors = "".join(f"<td colspan=\"2\">{'; '.join(f'{_e(t)} as {_e(p)}: {n}' for t, p, n in st['synthetic'].get('confusions', []))}</td>"
                         for _, st in sides)
        tables.append(f"<h3>{_e(kind)}</h3><table><tr><th>recall on the test split</th>{head}</tr>{''.join(rows)}"
                      f"<tr><td>most frequent errors</td>{errors}</tr></table>")
    if not tables:
        return ""
    return "<h2>Students per label</h2>" + "".join(tables)


def _lengths_section(result: BenchResult) -> str:
    charts = []
    for i, run in enumerate(result.report["runs"]):
        fig = result.figures.get(run["name"], {}).get("lengths")
        if fig:
            charts.append(_histogram(f"length: {run['name']} vs human", [(run["name"], _color(i, run["name"]), fig["synthetic"]),
                                                                         ("human", HUMAN, fig["human"])]))
    return f'<h2>Length (tokens per example)</h2><div class="grid">{"".join(charts)}</div>'


def _map_section(result: BenchResult, size: int = 520) -> str:
    points = result.figures.get("_map") or {}
    if not points:
        return ""
    xy = np.array([p for data in points.values() for p in data["xy"]] or [[0.0, 0.0]])
    lo, hi = xy.min(axis=0), xy.max(axis=0)
    scale = (size - 20) / np.where(hi - lo == 0, 1, hi - lo)
    parts = []
    for i, (name, data) in enumerate(points.items()):
        colour = _color(i, name)
        for (x, y), label in zip(data["xy"], data["labels"]):
            px, py = 10 + (x - lo[0]) * scale[0], size - 10 - (y - lo[1]) * scale[1]
            parts.append(f'<circle cx="{px:.1f}" cy="{py:.1f}" r="2.2" fill="{colour}" fill-opacity="0.55"><title>{_e(name)}: {_e(label)}</title></circle>')
    svg = f'<svg class="card" width="{size}" height="{size}" role="img">{"".join(parts)}</svg>'
    return f'<h2>Embedding map (PCA to 2-D; hover for the label)</h2>{_legend(list(points))}{svg}'


def _samples_section(report: dict) -> str:
    blocks = []
    for run in report["runs"]:
        rows = "".join(f"<tr><td>{_e(s['label'])}</td><td>{_e(s['text'])}</td><td class='muted'>{_e(s['source'] or '')}</td></tr>"
                       for s in run["samples"])
        blocks.append(f"<h3>{_e(run['name'])}</h3><table><tr><th>label</th><th>example</th><th>source passage</th></tr>{rows}</table>")
    return "<h2>Sample examples</h2>" + "".join(blocks)


def _unavailable(node, path: str, out: list[str]) -> None:
    if isinstance(node, dict):
        if set(node) == {"unavailable"}:
            out.append(f"{path}: {node['unavailable']}")
            return
        for key, value in node.items():
            _unavailable(value, f"{path}.{key}" if path else key, out)


def _header(report: dict) -> str:
    t = report["timing"]
    rows = [("embedder", report["embedder"]), ("reference", f"{report['reference']['path']} ({report['reference']['rows']} rows)"),
            ("train", f"{report['train']['path']} ({report['train']['rows']} rows)" if report["train"] else "none (no oracle, no gold ceiling)"),
            ("time", f"{t['total_s']} s total, {t['embed_s']} s embedding {t['texts_embedded']} texts, "
                     f"{t['texts_from_cache']} from the cache (ratio {t['total_over_embed']})"),
            ("settings", json.dumps(report["settings"]))]
    table = "".join(f"<tr><th>{_e(k)}</th><td>{_e(v)}</td></tr>" for k, v in rows)
    warnings = [w for part in (report["reference"], report["train"] or {}, *report["runs"]) for w in part.get("warnings", [])]
    notes = []
    for run in report["runs"]:
        _unavailable(run["metrics"], run["name"], notes)
    warn = "".join(f'<li class="warn">{_e(w)}</li>' for w in warnings)
    missing = "".join(f"<li>{_e(n)}</li>" for n in notes)
    return (f"<table>{table}</table>" + (f"<h2>Warnings</h2><ul>{warn}</ul>" if warn else "")
            + (f"<h2>Not computed (with the reason)</h2><ul>{missing}</ul>" if missing else ""))


def render_html(result: BenchResult) -> str:
    """The whole report as one HTML string."""
    report = result.report
    title = "Seedbed benchmark: " + ", ".join(run["name"] for run in report["runs"])
    body = [f"<h1>{_e(title)}</h1>", _header(report), _metric_section(report), _labels_section(report),
            _students_section(report), _lengths_section(result), _map_section(result), _samples_section(report)]
    return (f'<!doctype html><html lang="en"><head><meta charset="utf-8"><title>{_e(title)}</title>'
            f'<style>{CSS}</style></head><body>{"".join(body)}</body></html>\n')
