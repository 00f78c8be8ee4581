"""A drift report as one self-contained HTML page a person can read without a server.

Per feature: the reference and current distributions over the frozen bins (numeric) or the
categories (categorical) as inline SVG bars, PSI / KL / KS D or chi-square with its p-value
against the thresholds, n, and the verdict; above them the report's verdict and its signature
status. No scripts, no external resources: every byte is in the file (pure: the caller passes
everything in, :func:`render_drift_page` only formats).
"""

from __future__ import annotations

import html
import itertools
import math
from dataclasses import dataclass
from typing import Final

from domain.drift import DriftResult, FeatureDrift, FeatureKind, Verdict

_BAR_WIDTH: Final = 36
_CHART_HEIGHT: Final = 120

_CSS: Final = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:2rem;color:#1f2328;
background:#fff;max-width:1100px}
h1{font-size:1.5rem;margin:0 0 .25rem}h2{font-size:1.15rem;margin:0}
.meta{color:#57606a;margin:.15rem 0}
.verdict{display:inline-block;padding:.15rem .6rem;border-radius:1rem;font-weight:600;
font-size:.85rem;color:#fff}
.DRIFT{background:#cf222e}.NO_DRIFT{background:#1a7f37}.INSUFFICIENT_DATA{background:#9a6700}
.sig-ok{color:#1a7f37;font-weight:600}.sig-bad{color:#cf222e;font-weight:600}
.feature{border:1px solid #d0d7de;border-radius:8px;padding:1rem;margin:1rem 0}
.head{display:flex;gap:1rem;align-items:center;justify-content:space-between}
table{border-collapse:collapse;margin:.5rem 0}td,th{padding:.2rem .7rem;text-align:left;
border-bottom:1px solid #eaeef2;font-variant-numeric:tabular-nums}
.over{color:#cf222e;font-weight:600}.legend span{display:inline-block;width:.8rem;height:.8rem;
margin:0 .3rem 0 1rem;vertical-align:middle}
svg text{font-size:10px;fill:#57606a}
"""


@dataclass(frozen=True)
class PageContext:
    """What the page says about the report besides its figures."""

    title: str
    lines: tuple[str, ...]  # e.g. report id, tenant, the windows compared
    signature_ok: bool | None  # None: not a signed report (a local comparison)
    signature_detail: str


def render_drift_page(result: DriftResult, context: PageContext) -> str:
    esc = html.escape
    limits = result.thresholds
    if context.signature_ok is None:
        signature = f'<p class="meta">Signature: {esc(context.signature_detail)}</p>'
    else:
        css = "sig-ok" if context.signature_ok else "sig-bad"
        word = "verified" if context.signature_ok else "NOT VERIFIED"
        signature = (
            f'<p class="meta">Signature: <span class="{css}">{word}</span>'
            f" — {esc(context.signature_detail)}</p>"
        )
    rule = (
        f"A feature drifts when its p-value is below {limits.alpha:g}/{len(result.features)}"
        f" = {result.per_feature_alpha:.4g} (Bonferroni) and its PSI is at least"
        f" {limits.psi_floor:g}; a sample of {limits.min_events} values or fewer is"
        " INSUFFICIENT_DATA."
    )
    features = "\n".join(_feature(f, result) for f in result.features)
    meta = "".join(f'<p class="meta">{esc(line)}</p>' for line in context.lines)
    return (
        "<!DOCTYPE html>\n"
        '<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{esc(context.title)}</title><style>{_CSS}</style></head><body>"
        f"<h1>{esc(context.title)} "
        f'<span class="verdict {result.verdict.value}">{result.verdict.value}</span></h1>'
        f'{meta}{signature}<p class="meta">{esc(rule)}</p>'
        '<p class="legend"><span style="background:#8c959f"></span>reference'
        '<span style="background:#0969da"></span>current</p>'
        f"{features}</body></html>\n"
    )


def _feature(feature: FeatureDrift, result: DriftResult) -> str:
    esc = html.escape
    limits = result.thresholds
    if feature.kind is FeatureKind.NUMERIC:
        test, statistic, p_value = "KS D", feature.ks_d, feature.ks_p
        labels = _bin_labels(feature.bin_edges or ())
    else:
        test, statistic, p_value = "chi-square", feature.chi2, feature.chi2_p
        labels = list(feature.categories or ())
    p_over = p_value is not None and p_value < result.per_feature_alpha
    psi_over = feature.psi >= limits.psi_floor
    rows = [
        ("n (reference / current)", f"{feature.n_reference} / {feature.n_current}", "", False),
        ("PSI", f"{feature.psi:.4f}", f"drift at ≥ {limits.psi_floor:g}", psi_over),
        ("KL divergence", f"{feature.kl:.4f}", "", False),
        (test, _number(statistic), "", False),
        ("p-value", _number(p_value), f"drift below {result.per_feature_alpha:.4g}", p_over),
    ]
    table = "".join(
        f'<tr><th>{esc(name)}</th><td class="{"over" if over else ""}">{esc(value)}</td>'
        f"<td>{esc(note)}</td></tr>"
        for name, value, note, over in rows
    )
    chart = _chart(feature.reference_counts, feature.current_counts, labels, feature.name)
    return (
        f'<section class="feature"><div class="head"><h2>{esc(feature.name)}'
        f' <small class="meta">({feature.kind.value})</small></h2>'
        f'<span class="verdict {feature.verdict.value}">{feature.verdict.value}</span></div>'
        f"<table>{table}</table>{chart}</section>"
    )


def _chart(
    reference: tuple[int, ...], current: tuple[int, ...], labels: list[str], name: str
) -> str:
    """Grouped bars of each bin's share of its sample (reference grey, current blue)."""
    ref_total = sum(reference) or 1
    cur_total = sum(current) or 1
    shares = [(r / ref_total, c / cur_total) for r, c in zip(reference, current, strict=True)]
    top = max((max(pair) for pair in shares), default=1.0) or 1.0
    width = len(shares) * (2 * _BAR_WIDTH + 14) + 10
    bars = []
    for i, (ref_share, cur_share) in enumerate(shares):
        x = 10 + i * (2 * _BAR_WIDTH + 14)
        for offset, share, colour in (
            (0, ref_share, "#8c959f"),
            (_BAR_WIDTH, cur_share, "#0969da"),
        ):
            h = round(share / top * _CHART_HEIGHT, 1)
            bars.append(
                f'<rect x="{x + offset}" y="{_CHART_HEIGHT - h + 4}" width="{_BAR_WIDTH - 2}"'
                f' height="{h}" fill="{colour}"><title>{share:.1%}</title></rect>'
            )
        label = labels[i] if i < len(labels) else str(i + 1)
        bars.append(
            f'<text x="{x + _BAR_WIDTH}" y="{_CHART_HEIGHT + 18}" text-anchor="middle">'
            f"{html.escape(label)}</text>"
        )
    return (
        f'<svg role="img" aria-label="{html.escape(name)}: reference and current distribution"'
        f' width="{width}" height="{_CHART_HEIGHT + 26}" viewBox="0 0 {width}'
        f' {_CHART_HEIGHT + 26}">{"".join(bars)}</svg>'
    )


def _bin_labels(edges: tuple[float | None, ...]) -> list[str]:
    """'<=a', 'a to b', ..., '>z' from the frozen bin edges (None: an open end)."""
    labels = []
    for low, high in itertools.pairwise(edges):
        if low is None:
            labels.append(f"<={_short(high)}")
        elif high is None:
            labels.append(f">{_short(low)}")
        else:
            labels.append(f"{_short(low)} to {_short(high)}")
    return labels


def _short(value: float | None) -> str:
    return "" if value is None else f"{value:.3g}"


def _number(value: float | None) -> str:
    if value is None or math.isnan(value):
        return "—"
    return f"{value:.4g}"


__all__ = ["PageContext", "Verdict", "render_drift_page"]
