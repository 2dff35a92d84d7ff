"""Plotly figure builders: pure functions from aggregates to figures.

They take already-aggregated numbers (histogram counts, not 100,000 raw values), so a figure's
size does not grow with the case base, and they never touch Streamlit, so tests can call them.
"""
from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np
import plotly.graph_objects as go

PALETTE = ["#5b45d6", "#47c4b0", "#f2b84b", "#e4572e", "#3c91e6", "#9b5de5", "#00a676", "#ff8c42"]


def _layout(fig: go.Figure, title: str | None = None, height: int = 320) -> go.Figure:
    fig.update_layout(
        title=title, height=height, margin=dict(l=40, r=20, t=50 if title else 20, b=40),
        colorway=PALETTE, legend=dict(orientation="h", y=-0.2),
    )
    return fig


def histogram(edges: Sequence[float], counts: Sequence[int], title: str) -> go.Figure:
    """Bars from ``numpy.histogram`` output (edges has one more entry than counts)."""
    edges = np.asarray(edges, dtype=float)
    centers = (edges[:-1] + edges[1:]) / 2
    widths = np.diff(edges)
    fig = go.Figure(go.Bar(x=centers, y=list(counts), width=widths, marker_line_width=0,
                           hovertemplate="%{x:.3g}: %{y}<extra></extra>"))
    fig.update_layout(bargap=0.02, xaxis_title=None, yaxis_title="cases")
    return _layout(fig, title, height=240)


def category_bars(counts: Mapping[str, int], title: str, horizontal: bool = False) -> go.Figure:
    names = [str(k) for k in counts]
    values = list(counts.values())
    bar = go.Bar(y=names, x=values, orientation="h") if horizontal else go.Bar(x=names, y=values)
    return _layout(go.Figure(bar), title, height=240 if not horizontal else max(200, 28 * len(names) + 80))


def missing_values(fractions: Mapping[str, float], title: str = "Missing values per column") -> go.Figure:
    names = list(fractions)
    values = [100 * float(fractions[n]) for n in names]
    fig = go.Figure(go.Bar(x=names, y=values, marker_color=["#e4572e" if v > 0 else "#c8c4e6" for v in values],
                           hovertemplate="%{x}: %{y:.2f}%<extra></extra>"))
    fig.update_layout(yaxis_title="% missing", yaxis_range=[0, max(5.0, max(values, default=0) * 1.1)])
    return _layout(fig, title, height=260)


def class_balance(counts: Mapping[str, int], title: str = "Class balance") -> go.Figure:
    total = sum(counts.values()) or 1
    names = [str(k) for k in counts]
    fig = go.Figure(go.Bar(x=names, y=list(counts.values()),
                           text=[f"{100 * v / total:.1f}%" for v in counts.values()], textposition="outside"))
    fig.update_layout(yaxis_title="cases")
    return _layout(fig, title, height=280)


def group_rates(rates: Mapping[str, Mapping[str, float]], title: str) -> go.Figure:
    """Grouped bars: for each group of the sensitive column, the share of each class."""
    fig = go.Figure()
    classes: list[str] = []
    for group_rates_ in rates.values():
        classes += [c for c in group_rates_ if c not in classes]
    for cls in classes:
        fig.add_bar(name=str(cls), x=[str(g) for g in rates], y=[float(rates[g].get(cls, 0.0)) for g in rates])
    fig.update_layout(barmode="group", yaxis_title="share of group", yaxis_range=[0, 1])
    return _layout(fig, title, height=300)


def similarity_heatmap(K: np.ndarray, labels: Sequence[str], title: str = "Fidelity |<ψi|ψj>|²") -> go.Figure:
    K = np.asarray(K, dtype=float)
    fig = go.Figure(go.Heatmap(z=K, x=list(labels), y=list(labels), zmin=0, zmax=1, colorscale="Viridis",
                               text=np.round(K, 3), texttemplate="%{text}" if len(labels) <= 12 else None,
                               hovertemplate="%{y} · %{x}: %{z:.4f}<extra></extra>"))
    fig.update_yaxes(autorange="reversed")
    return _layout(fig, title, height=max(300, 28 * len(labels) + 120))


def nearest_cases(case_ids: Sequence[str], scores: Sequence[float], labels: Sequence[str] | None = None,
                  title: str = "Nearest stored cases") -> go.Figure:
    text = [str(l) for l in labels] if labels is not None else None
    fig = go.Figure(go.Bar(y=[str(c) for c in case_ids][::-1], x=list(scores)[::-1], orientation="h",
                           text=text[::-1] if text else None, textposition="auto",
                           hovertemplate="%{y}: %{x:.4f}<extra></extra>"))
    fig.update_layout(xaxis_title="fidelity", xaxis_range=[0, 1])
    return _layout(fig, title, height=max(220, 26 * len(case_ids) + 90))


def exact_vs_sampled(exact: np.ndarray, sampled: np.ndarray, shots: int, title: str | None = None) -> go.Figure:
    """Each pair's sampled estimate against the exact fidelity, with the shot-noise band."""
    exact = np.asarray(exact, dtype=float).ravel()
    sampled = np.asarray(sampled, dtype=float).ravel()
    err = np.sqrt(np.clip(exact * (1 - exact), 0, None) / max(shots, 1))
    fig = go.Figure()
    fig.add_scatter(x=[0, 1], y=[0, 1], mode="lines", line=dict(dash="dash", color="#999"), name="exact = sampled")
    fig.add_scatter(x=exact, y=sampled, mode="markers", name=f"pairs ({shots} shots)",
                    error_y=dict(type="data", array=2 * err, visible=True),
                    hovertemplate="exact %{x:.4f}<br>sampled %{y:.4f}<extra></extra>")
    fig.update_layout(xaxis_title="exact fidelity", yaxis_title="sampled fidelity",
                      xaxis_range=[-0.02, 1.02], yaxis_range=[-0.02, 1.02])
    return _layout(fig, title or "Exact vs sampled fidelity (bars: ±2σ shot noise)", height=360)


def kernel_spread(offdiag: np.ndarray, n_qubits: int, title: str = "Off-diagonal fidelities") -> go.Figure:
    """Distribution of off-diagonal kernel values, with 1/2^n (where a concentrated kernel sits)."""
    values = np.asarray(offdiag, dtype=float).ravel()
    counts, edges = np.histogram(values, bins=40, range=(0.0, 1.0))
    fig = histogram(edges, counts, title)
    fig.add_vline(x=1 / 2 ** n_qubits, line_dash="dot", line_color="#e4572e",
                  annotation_text=f"1/2^{n_qubits}", annotation_position="top right")
    fig.update_layout(yaxis_title="pairs", xaxis_title="fidelity")
    return fig


def gate_counts(before: Mapping[str, int], after: Mapping[str, int] | None = None,
                title: str = "Gate counts") -> go.Figure:
    fig = go.Figure()
    fig.add_bar(name="as built", x=list(before), y=list(before.values()))
    if after is not None:
        fig.add_bar(name="transpiled", x=list(after), y=list(after.values()))
    fig.update_layout(barmode="group")
    return _layout(fig, title, height=280)


def progress_curve(times: Sequence[float], fractions: Sequence[float], title: str = "Progress") -> go.Figure:
    fig = go.Figure(go.Scatter(x=list(times), y=[100 * f for f in fractions], mode="lines+markers"))
    fig.update_layout(xaxis_title="seconds", yaxis_title="%", yaxis_range=[0, 100])
    return _layout(fig, title, height=220)


def compare_metrics(table: Mapping[str, Mapping[str, float]], title: str = "Metrics by run") -> go.Figure:
    """Grouped bars: ``table[run][metric] = value``."""
    fig = go.Figure()
    metrics: list[str] = []
    for row in table.values():
        metrics += [m for m in row if m not in metrics]
    for run, row in table.items():
        fig.add_bar(name=str(run), x=metrics, y=[row.get(m) for m in metrics])
    fig = _layout(fig, title, height=320)
    # legend at the side: metric names are long and tilt, and a legend below the plot sat on them
    fig.update_layout(barmode="group", legend=dict(orientation="v", x=1.01, xanchor="left", y=1, yanchor="top"))
    return fig


def confusion_matrix(matrix: Sequence[Sequence[int]], labels: Sequence[str], title: str = "Confusion matrix") -> go.Figure:
    m = np.asarray(matrix, dtype=float)
    fig = go.Figure(go.Heatmap(z=m, x=[str(l) for l in labels], y=[str(l) for l in labels], colorscale="Blues",
                               text=m.astype(int), texttemplate="%{text}", showscale=False))
    fig.update_layout(xaxis_title="predicted", yaxis_title="true")
    fig.update_yaxes(autorange="reversed")
    return _layout(fig, title, height=300)


def probabilities(probs: Mapping[str, float], epsilon: float | None = None, title: str = "Class probabilities") -> go.Figure:
    names = [str(k) for k in probs]
    fig = go.Figure(go.Bar(x=list(probs.values()), y=names, orientation="h",
                           hovertemplate="%{y}: %{x:.3f}<extra></extra>"))
    if epsilon is not None:
        fig.add_vline(x=epsilon, line_dash="dot", line_color="#e4572e", annotation_text="ε")
    fig.update_layout(xaxis_range=[0, 1])
    return _layout(fig, title, height=max(180, 30 * len(names) + 80))


def predictions_over_time(days: Sequence[str], counts_by_series: Mapping[str, Sequence[int]],
                          title: str = "Predictions per day") -> go.Figure:
    fig = go.Figure()
    for name, counts in counts_by_series.items():
        fig.add_bar(name=str(name), x=list(days), y=list(counts))
    fig.update_layout(barmode="stack", yaxis_title="predictions")
    return _layout(fig, title, height=300)


def confidence_histogram(confidences: Sequence[float], epsilon: float | None = None,
                         title: str = "Confidence of predictions") -> go.Figure:
    counts, edges = np.histogram(np.asarray(confidences, dtype=float), bins=20, range=(0.0, 1.0))
    fig = histogram(edges, counts, title)
    if epsilon is not None:
        fig.add_vline(x=epsilon, line_dash="dot", line_color="#e4572e", annotation_text="ε")
    fig.update_layout(yaxis_title="predictions")
    return fig
