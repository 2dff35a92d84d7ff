"""Monitoring: baselines, drift, novelty, decay, automated adjustment, ROI and model cards.

Module map (each importable on its own; pandas and scipy load inside the functions that need them):

- ``stats``: two-sample statistics (KS, PSI, normalised Wasserstein, chi-squared, Jensen-Shannon, ECE).
- ``baseline``: ``build_baseline`` / ``write_baseline`` (statistics.json, constraints.json in Model
  Monitor's formats, plus monitoring_baseline.json), ``Baseline`` loader, ``novelty_baseline``.
- ``capture``: data capture and ground truth read through ``qcbr.storage`` object stores.
- ``drift``: ``run_drift`` (per-feature verdicts, constraint violations), prediction and novelty drift.
- ``decay``: accuracy, per-class recall and calibration over time windows.
- ``job``: ``run_monitoring`` / ``monitor_endpoint`` (one execution), listings for the dashboard.
- ``policy``: the automated-adjustment policy (``evaluate_policy``, ``apply_policy``).
- ``scheduler``: the local scheduler process and per-endpoint schedules.
- ``notifications``: QCBR_HOME/notifications.jsonl.
- ``roi``: audited business assumptions, ROI per version and in production.
- ``model_card``: ``render_model_card`` -> Markdown.
"""
