"""Plotly figures of the Monitoring and Overview screens: pure functions from report pieces and
aggregated frames to figures (no Streamlit, no I/O), so tests call them directly.

Inputs are what ``qcbr.monitoring`` already aggregates: a feature's ``distribution`` (bin edges
and shares, or categories and shares), ``job.executions_frame``, ``decay.windows_frame``,
``roi.production_roi`` and ``roi.compare_versions`` frames. A figure's size never grows with the
number of captured predictions.
"""
from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np
import pandas as pd
import plotly.graph_objects as go

REFERENCE = "#8c86c9"  # the training baseline
CURRENT = "#e4572e"  # what the endpoint saw
GOOD, BAD, NEUTRAL = "#00a676", "#e4572e", "#5b45d6"
PALETTE = ["#5b45d6", "#47c4b0", "#f2b84b", "#e4572e", "#3c91e6", "#9b5de5", "#00a676", "#ff8c42"]


def _layout(fig: go.Figure, title: str | None = None, height: int = 320) -> go.Figure:
    fig.update_layout(title=title, height=height, margin=dict(l=40, r=20, t=50 if title else 20, b=40),
                      colorway=PALETTE, legend=dict(orientation="h", y=-0.2))
    return fig


def empty_figure(message: str, height: int = 200) -> go.Figure:
    """A blank figure that says why it is blank (so a chart slot never just disappears)."""
    fig = go.Figure()
    fig.add_annotation(text=message, showarrow=False, x=0.5, y=0.5, xref="paper", yref="paper")
    fig.update_xaxes(visible=False)
    fig.update_yaxes(visible=False)
    return _layout(fig, None, height)


# ------------------------------------------------------------------------------- monitoring
def feature_distribution(distribution: Mapping | None, feature: str) -> go.Figure:
    """Reference (training sample) vs current (captured values) shares of one feature.

    ``distribution`` is a drift report feature's: numeric ``{kind, edges, reference, current}``
    (shares per bin), categorical ``{kind, categories, reference, current}``.
    """
    if not distribution:
        return empty_figure(f"No distribution for {feature}: it was not compared in this execution")
    if distribution.get("kind") == "numeric":
        edges = np.asarray(distribution["edges"], dtype=float)
        x = (edges[:-1] + edges[1:]) / 2
        width = np.diff(edges)
        hover = "%{x:.3g}: %{y:.1%}<extra>%{fullData.name}</extra>"
        fig = go.Figure([
            go.Bar(x=x, y=distribution["reference"], width=width, name="reference (training)", marker_color=REFERENCE,
                   opacity=0.6, hovertemplate=hover),
            go.Bar(x=x, y=distribution["current"], width=width, name="current (captured)", marker_color=CURRENT,
                   opacity=0.6, hovertemplate=hover),
        ])
        fig.update_layout(barmode="overlay", bargap=0.02)
    else:
        cats = [str(c) for c in distribution.get("categories", [])]
        fig = go.Figure([
            go.Bar(x=cats, y=distribution["reference"], name="reference (training)", marker_color=REFERENCE),
            go.Bar(x=cats, y=distribution["current"], name="current (captured)", marker_color=CURRENT),
        ])
        fig.update_layout(barmode="group")
    fig.update_layout(yaxis_title="share", yaxis_tickformat=".0%", xaxis_title=feature)
    return _layout(fig, f"{feature}: reference vs current", height=300)


def novelty_distribution(novelty: Mapping | None) -> go.Figure:
    """Best similarity of each query to the case memory: the memory's own (leave-one-out)
    distribution against the window's, with the novelty cutoff."""
    if not novelty or not novelty.get("evaluated") or not novelty.get("distribution"):
        note = (novelty or {}).get("note") or "novelty was not evaluated in this execution"
        return empty_figure(f"No novelty distribution: {note}")
    fig = feature_distribution(novelty["distribution"], "best similarity to the case memory")
    cutoff = novelty.get("cutoff")
    if cutoff is not None:
        fig.add_vline(x=float(cutoff), line_dash="dash", line_color="#333",
                      annotation_text=f"novel below {float(cutoff):.3f}", annotation_position="top left")
    fig.update_layout(title=f"Novelty: {float(novelty.get('novel_share') or 0):.1%} of queries novel "
                            f"(expected {float(novelty.get('expected_share') or 0):.0%})")
    return fig


def class_mix(prediction_drift: Mapping | None) -> go.Figure:
    """Predicted class mix against the training labels' mix."""
    if not prediction_drift or not prediction_drift.get("evaluated"):
        note = (prediction_drift or {}).get("note") or "prediction drift was not evaluated"
        return empty_figure(f"No class mix: {note}")
    ref, cur = prediction_drift.get("reference") or {}, prediction_drift.get("current") or {}
    classes = sorted(set(ref) | set(cur))
    fig = go.Figure([
        go.Bar(x=classes, y=[ref.get(c, 0.0) for c in classes], name="training labels", marker_color=REFERENCE),
        go.Bar(x=classes, y=[cur.get(c, 0.0) for c in classes], name="predictions", marker_color=CURRENT),
    ])
    fig.update_layout(barmode="group", yaxis_tickformat=".0%", yaxis_title="share")
    return _layout(fig, "Predicted class mix", height=280)


def executions_over_time(frame: pd.DataFrame) -> go.Figure:
    """Drift share, novel share, accuracy and calibration error per execution (``executions_frame``)."""
    if frame is None or len(frame) == 0:
        return empty_figure("No monitoring executions yet")
    done = frame[frame["status"] != "Failed"]
    fig = go.Figure()
    for column, name, color in (("drift_share", "drifted features (share)", BAD),
                                ("novel_share", "novel queries (share)", "#f2b84b"),
                                ("accuracy", "accuracy (ground truth)", GOOD),
                                ("ece", "calibration error (ECE)", NEUTRAL)):
        values = pd.to_numeric(done[column], errors="coerce")
        if values.notna().any():
            fig.add_trace(go.Scatter(x=done["time"], y=values, name=name, mode="lines+markers",
                                     line=dict(color=color), connectgaps=False))
    failed = frame[frame["status"] == "Failed"]
    if len(failed):
        fig.add_trace(go.Scatter(x=failed["time"], y=[0.0] * len(failed), name="failed execution", mode="markers",
                                 marker=dict(symbol="x", size=10, color="#333"),
                                 text=failed["failure_reason"], hovertemplate="%{x}<br>%{text}<extra>failed</extra>"))
    fig.update_layout(yaxis_range=[0, 1.05], yaxis_tickformat=".0%")
    return _layout(fig, "Monitoring over time (one point per execution)", height=320)


def decay_over_time(windows: pd.DataFrame, reference_accuracy: float | None = None) -> go.Figure:
    """Accuracy, per-class recall and ECE per time window (``decay.windows_frame``)."""
    if windows is None or len(windows) == 0:
        return empty_figure("No ground truth in this window yet")
    fig = go.Figure()
    x = windows["window_start"]
    fig.add_trace(go.Scatter(x=x, y=windows["accuracy"], name="accuracy", mode="lines+markers",
                             line=dict(color=GOOD, width=3), customdata=windows["n_labelled"],
                             hovertemplate="%{x}: %{y:.1%} on %{customdata} labelled<extra>accuracy</extra>"))
    for i, column in enumerate(c for c in windows.columns if c.startswith("recall_")):
        fig.add_trace(go.Scatter(x=x, y=windows[column], name=f"recall {column[len('recall_'):]}",
                                 mode="lines+markers", line=dict(dash="dot", color=PALETTE[(i + 1) % len(PALETTE)])))
    if "ece" in windows and pd.to_numeric(windows["ece"], errors="coerce").notna().any():
        fig.add_trace(go.Scatter(x=x, y=windows["ece"], name="calibration error (ECE)", mode="lines+markers",
                                 line=dict(color=NEUTRAL, dash="dash")))
    if reference_accuracy is not None:
        fig.add_hline(y=float(reference_accuracy), line_dash="dash", line_color="#999",
                      annotation_text=f"validation accuracy {float(reference_accuracy):.1%}")
    fig.update_layout(yaxis_range=[0, 1.05], yaxis_tickformat=".0%")
    return _layout(fig, "Decay: accuracy, recall per class and calibration by window", height=340)


def traffic_over_time(daily: pd.DataFrame) -> go.Figure:
    """Predictions per day, with the labelled (ground truth) share on top."""
    if daily is None or len(daily) == 0:
        return empty_figure("No captured predictions in this period")
    width = _bar_width_ms(daily["day"], pd.Timedelta(days=1))
    fig = go.Figure([
        go.Bar(x=daily["day"], y=daily["predictions"] - daily["labelled"], name="without ground truth",
               marker_color="#c8c4e6", width=width, offset=0),
        go.Bar(x=daily["day"], y=daily["labelled"], name="with ground truth", marker_color=NEUTRAL, width=width,
               offset=0),
    ])
    fig.update_layout(barmode="stack", yaxis_title="predictions")
    return _layout(fig, "Predictions per day", height=260)


# ------------------------------------------------------------------------------------- ROI
def _bar_width_ms(starts: pd.Series, window: pd.Timedelta | None) -> float:
    """Bars as wide as their time window (a lone bar otherwise gets a millisecond-wide axis)."""
    if window is None:
        gaps = pd.to_datetime(starts, utc=True).sort_values().diff().dropna()
        window = gaps[gaps > pd.Timedelta(0)].min() if len(gaps) else None
        window = window if isinstance(window, pd.Timedelta) else pd.Timedelta(days=1)
    return 0.9 * window.total_seconds() * 1000


def roi_over_time(frame: pd.DataFrame, currency: str = "EUR", break_even: object = None,
                  window: pd.Timedelta | None = None) -> go.Figure:
    """Net value per window (bars) and the cumulative net (line) of ``roi.production_roi``;
    the break-even window is marked when there is one. ``window``: the windows' length
    (default: the smallest gap between them, or a day)."""
    if frame is None or len(frame) == 0:
        return empty_figure("No production history yet")
    net = frame["net"].astype(float)
    fig = go.Figure([
        go.Bar(x=frame["window_start"], y=net, name="net per window", width=_bar_width_ms(frame["window_start"], window),
               offset=0, marker_color=[GOOD if v >= 0 else BAD for v in net]),
        go.Scatter(x=frame["window_start"], y=frame["cumulative_net"].astype(float), name="cumulative net",
                   mode="lines+markers", line=dict(color=NEUTRAL, width=3)),
    ])
    fig.add_hline(y=0, line_color="#999")
    if break_even is not None:
        fig.add_vline(x=pd.Timestamp(break_even).timestamp() * 1000, line_dash="dash", line_color=GOOD,
                      annotation_text="break-even", annotation_position="top left")
    fig.update_layout(yaxis_title=currency, barmode="overlay")
    return _layout(fig, "ROI in production over time (estimate from the assumptions)", height=340)


def break_even_projection(curves: Mapping[str, pd.DataFrame], currency: str = "EUR") -> go.Figure:
    """Cumulative net by month for each version (``roi.cumulative_value_curve``): where each
    crosses zero is its break-even month."""
    if not curves:
        return empty_figure("No version with a usable validation confusion matrix")
    fig = go.Figure()
    for name, curve in curves.items():
        fig.add_trace(go.Scatter(x=curve["month"], y=curve["cumulative_net"], name=str(name), mode="lines"))
    fig.add_hline(y=0, line_color="#999")
    fig.update_layout(xaxis_title="months in production", yaxis_title=currency)
    return _layout(fig, "Projected break-even per version (assumed monthly volume)", height=320)


def version_comparison(frame: pd.DataFrame, currency: str = "EUR") -> go.Figure:
    """Expected monthly value, error cost and net of each version (``roi.compare_versions``)."""
    usable = frame[frame["monthly_net"].notna()] if frame is not None and "monthly_net" in frame else None
    if usable is None or len(usable) == 0:
        return empty_figure("No version with a usable validation confusion matrix")
    x = [f"v{v}" for v in usable["version"]]
    fig = go.Figure([
        go.Bar(x=x, y=usable["monthly_value"], name="value", marker_color=GOOD),
        go.Bar(x=x, y=-usable["monthly_error_cost"], name="error cost", marker_color=BAD),
        go.Bar(x=x, y=-usable["monthly_hosting_cost"], name="hosting", marker_color="#999"),
        go.Scatter(x=x, y=usable["monthly_net"], name="net", mode="markers", marker=dict(size=14, color=NEUTRAL,
                                                                                           symbol="diamond")),
    ])
    fig.update_layout(barmode="relative", yaxis_title=f"{currency} per month")
    return _layout(fig, "Expected monthly value per version (validation confusion matrix)", height=320)


def kpi_series(frame: pd.DataFrame, columns: Sequence[str]) -> dict[str, list]:
    """Per-window values of KPI columns (for sparkline-like metric charts)."""
    if frame is None or len(frame) == 0:
        return {c: [] for c in columns}
    return {c: [None if pd.isna(v) else float(v) for v in frame[c]] for c in columns if c in frame}
