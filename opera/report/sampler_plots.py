"""The samplers at work, from the train logs: their schedules (dynamic pruning's x(t), c(t) and query
threshold, InfoBatch's skipped share per epoch, and any other sampler's ``schedule_keys``) and their
diagnostics (how each spread training over queries and positives)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from opera import methods as method_registry
from opera.methods import display_name, sampling
from opera.methods.sampling import DynamicPruningSampler, InfoBatchSampler
from opera.report.plots import STYLE, highlighted, method_color, ordered, save


def _sampler_series(entries: Sequence[Mapping], key: str) -> tuple[list[int], list[float]]:
    """(steps, values) of one sampler field over a train log, skipping entries without it."""
    points = [(int(e["step"]), e["sampler"][key]) for e in entries if (e.get("sampler") or {}).get(key) is not None]
    return [p[0] for p in points], [float(p[1]) for p in points]


def _pruned_per_epoch(entries: Sequence[Mapping]) -> list[tuple[int, float]]:
    """(epoch, share of the training queries InfoBatch skipped in it), from the first step of each epoch."""
    shares: dict[int, float] = {}
    for entry in entries:
        sampler = entry.get("sampler") or {}
        if "pruned" in sampler and sampler.get("n_queries"):
            shares.setdefault(int(sampler["epoch"]), sampler["pruned"] / sampler["n_queries"])
    return sorted(shares.items())


@plt.rc_context(STYLE)
def schedules(train_logs: Mapping[str, Sequence[Mapping]], out_path_stem: str | Path, title: str = "") -> list[Path]:
    """The samplers at work, read from the train logs of one seed: dynamic pruning's query-level
    strength x(t) and document-level cutoff c(t), its query-score threshold, InfoBatch's share of
    skipped queries per epoch, and any other sampler's ``schedule_keys``. A panel is drawn only when
    some log holds its fields; returns [] when none does. Saves ``out_path_stem``.png/.pdf."""
    panels = []
    dynamic = {
        m: e
        for m, e in train_logs.items()
        if any("x" in (x.get("sampler") or {}) for x in e) or any("c" in (x.get("sampler") or {}) for x in e)
    }
    if dynamic:
        panels += ["strength", "threshold"]
    infobatch = {m: _pruned_per_epoch(e) for m, e in train_logs.items()}
    infobatch = {m: v for m, v in infobatch.items() if v}
    if infobatch:
        panels.append("infobatch")
    others = _other_schedules(train_logs)
    if others:
        panels.append("other")
    if not panels:
        return []
    fig, axes = plt.subplots(1, len(panels), figsize=(5.2 * len(panels), 4.2), squeeze=False)
    axes = dict(zip(panels, axes[0], strict=True))
    if dynamic:
        ax, twin = axes["strength"], axes["strength"].twinx()
        for method in ordered(dynamic):
            color = method_color(method)
            steps, x = _sampler_series(dynamic[method], "x")
            if steps:
                ax.step(steps, x, where="post", color=color, linewidth=2, label=f"{display_name(method)}: x(t)")
            steps, c = _sampler_series(dynamic[method], "c")
            if steps:
                twin.plot(steps, c, color=color, linestyle="--", linewidth=1.4, label=f"{display_name(method)}: c(t)")
            steps, threshold = _sampler_series(dynamic[method], "query_threshold")
            if steps:
                axes["threshold"].step(
                    steps, threshold, where="post", color=color, linewidth=1.8, label=display_name(method)
                )
        ax.set_xlabel("training step")
        ax.set_ylabel("query-level strength x(t) (solid)")
        twin.set_ylabel("document-level cutoff c(t) (dashed)")
        ax.set_title("dynamic pruning schedules")
        handles = ax.get_legend_handles_labels()[0] + twin.get_legend_handles_labels()[0]
        ax.legend(handles=handles, loc="upper left", frameon=False, fontsize=9)
        ax.grid(True, alpha=0.3)
        axes["threshold"].set_xlabel("training step")
        axes["threshold"].set_ylabel("query score forced into the epoch (>=)")
        axes["threshold"].set_title("query threshold at each epoch start")
        axes["threshold"].legend(loc="best", frameon=False)
        axes["threshold"].grid(True, alpha=0.3)
    if infobatch:
        ax = axes["infobatch"]
        width = 0.8 / len(infobatch)
        for i, method in enumerate(ordered(infobatch)):
            epochs, shares = zip(*infobatch[method], strict=True)
            ax.bar(
                np.array(epochs) + i * width,
                shares,
                width=width,
                color=method_color(method),
                label=display_name(method),
            )
        ax.set_xlabel("epoch")
        ax.set_ylabel("share of training queries skipped")
        ax.set_title("InfoBatch pruning per epoch")
        ax.legend(loc="best", frameon=False)
        ax.grid(True, axis="y", alpha=0.3)
        ax.set_axisbelow(True)
    if others:
        ax = axes["other"]
        for (method, key), (steps, values) in others.items():
            ax.plot(steps, values, color=method_color(method), linewidth=1.8, label=f"{display_name(method)}: {key}")
        ax.set_xlabel("training step")
        ax.set_ylabel("value")
        ax.set_title("other samplers' schedules")
        ax.legend(loc="best", frameon=False)
        ax.grid(True, alpha=0.3)
    if title:
        fig.suptitle(title)
    return save(fig, Path(out_path_stem))


def _other_schedules(train_logs: Mapping[str, Sequence[Mapping]]) -> dict[tuple[str, str], tuple[list, list]]:
    """(method, field) -> (steps, values) of the schedule fields (its sampler's ``schedule_keys``) that
    the dynamic-pruning and InfoBatch panels do not draw: a new sampler's schedule gets a panel too."""
    drawn = {*DynamicPruningSampler.schedule_keys, *InfoBatchSampler.schedule_keys}
    series = {}
    for method in ordered(train_logs):
        keys = sampling.schedule_keys(method) if method in method_registry.METHODS else ()
        for key in keys:
            if key not in drawn:
                steps, values = _sampler_series(train_logs[method], key)
                if steps:
                    series[method, key] = (steps, values)
    return series


# (train-log sampler field, y label, title) of each diagnostics panel; fields from opera.methods.sampling
DIAGNOSTICS = (
    ("positive_tv", "total-variation distance", "positive draw vs uniform"),
    ("fresh_above_tau", "share of above-tau pairs", "fresh scores above tau (doc level)"),
    ("visit_cv", "coefficient of variation", "unevenness of query visits"),
    ("distinct_share", "share of training pairs", "distinct positives trained on"),
)


@plt.rc_context(STYLE)
def sampler_diagnostics(frame: pd.DataFrame, out_path_stem: str | Path, title: str = "") -> list[Path]:
    """How each method's sampler spread training, per step (mean over seeds, ± std band): the
    distance of the positive draw from uniform, the share of dynamic pruning's above-tau pairs
    whose score was written back by training, how unevenly queries are visited, and the share of
    training pairs trained on at least once. Panels without data (logs written before these
    fields existed) say so. Saves ``out_path_stem``.png/.pdf."""
    fig, axes = plt.subplots(1, len(DIAGNOSTICS), figsize=(4.6 * len(DIAGNOSTICS) + 1.8, 4.2), squeeze=False)
    for ax, (field, ylabel, panel_title) in zip(axes[0], DIAGNOSTICS, strict=True):
        values = frame.dropna(subset=[field])
        for method in ordered(values["method"]):
            curve = values[values["method"] == method].groupby("step")[field].agg(["mean", "std", "size"])
            band = curve["std"].fillna(0.0).to_numpy() if (curve["size"] > 1).any() else None
            color = method_color(method)
            width = 2.2 if highlighted(method) else 1.4
            ax.plot(curve.index, curve["mean"], color=color, linewidth=width, label=display_name(method))
            if band is not None:
                ax.fill_between(curve.index, curve["mean"] - band, curve["mean"] + band, color=color, alpha=0.15)
        if values.empty:
            ax.text(0.5, 0.5, "not in these train logs", ha="center", va="center", transform=ax.transAxes)
        ax.set_xlabel("training step")
        ax.set_ylabel(ylabel)
        ax.set_title(panel_title)
        ax.grid(True, alpha=0.3)
    handles = {}
    for ax in axes[0]:
        for handle, label in zip(*ax.get_legend_handles_labels(), strict=True):
            handles.setdefault(label, handle)
    if handles:
        legend = {"loc": "upper left", "bbox_to_anchor": (1.02, 1.0), "frameon": False}
        axes[0][-1].legend(handles.values(), handles.keys(), **legend)
    if title:
        fig.suptitle(f"sampler diagnostics · {title}")
    fig.text(0.01, -0.02, "Lines: mean over seeds per step; bands: ± 1 standard deviation over seeds.", fontsize=9)
    return save(fig, Path(out_path_stem))
