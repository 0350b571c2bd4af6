"""Figures of ``results/plots/``: metric vs training steps and vs wall time, training time per
method, the pruning data card (score distribution kept vs pruned by sp, query coverage); the
samplers' plots are in sampler_plots. Every function saves a PNG and a PDF and returns the
written paths."""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping, Sequence
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from opera import methods as method_registry
from opera.methods import display_name
from opera.report.frames import MAIN_METRICS, final_rows

log = logging.getLogger(__name__)

# Applied inside each plotting function (plt.rc_context), so importing this module changes nothing.
# Without a display matplotlib picks the Agg backend itself.
STYLE = {
    "font.size": 11,
    "axes.titlesize": 12,
    "axes.labelsize": 11,
    "legend.fontsize": 10,
    "xtick.labelsize": 10,
    "ytick.labelsize": 10,
    "figure.dpi": 100,
    "savefig.dpi": 150,
}
_EXTRA_COLORS = ["#17becf", "#bcbd22", "#e377c2", "#393b79", "#637939", "#843c39"]


def method_color(method: str) -> str:
    if method in method_registry.METHODS:
        return method_registry.METHODS[method].color
    return _EXTRA_COLORS[sum(map(ord, method)) % len(_EXTRA_COLORS)]


def method_marker(method: str) -> str:
    entry = method_registry.METHODS.get(method)
    return entry.marker if entry else "o"


def highlighted(method: str) -> bool:
    entry = method_registry.METHODS.get(method)
    return bool(entry and entry.highlight)


def _trains(method: str) -> bool:
    entry = method_registry.METHODS.get(method)
    return entry is None or entry.trains


def ordered(methods) -> list[str]:
    return sorted(set(methods), key=method_registry.order_key)


def _method_line(ax, method: str, x, y, band=None) -> None:
    """One method's line in its style (the highlighted method bolder), with a ± ``band`` if given."""
    color, emphasis = method_color(method), highlighted(method)
    ax.plot(
        x,
        y,
        color=color,
        marker=method_marker(method),
        markersize=8 if emphasis else 5,
        linewidth=2.4 if emphasis else 1.5,
        label=display_name(method),
        zorder=3 if emphasis else 2,
    )
    if band is not None:
        ax.fill_between(x, y - band, y + band, color=color, alpha=0.15, linewidth=0)


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._+-]+", "_", str(name))


def save(fig, stem: Path) -> list[Path]:
    stem = Path(stem)
    stem.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    paths = [Path(f"{stem}.png"), Path(f"{stem}.pdf")]
    fig.savefig(paths[0], bbox_inches="tight", metadata={"Software": None})
    fig.savefig(paths[1], bbox_inches="tight", metadata={"CreationDate": None, "Creator": None, "Producer": None})
    plt.close(fig)
    log.info("wrote %s", ", ".join(str(p) for p in paths))
    return paths


# --- metric vs training progress --------------------------------------------------------------------

# x axes of the progress figures: the column read, the file's kind, and the axis label
PROGRESS_AXES = {
    "step": ("metric_vs_steps", "training steps"),
    "train_seconds": ("metric_vs_time", "training wall time"),
}


@plt.rc_context(STYLE)
def metric_vs_progress(
    long: pd.DataFrame,
    out_dir: str | Path,
    x: str = "step",
    metrics: Sequence[str] = MAIN_METRICS,
    reference: str = method_registry.REFERENCE_METHOD,
    pool: bool = False,
) -> list[Path]:
    """Per dataset x model, one panel per metric against training progress: ``x`` = ``step``
    (optimizer steps, what every method pays alike; ``metric_vs_steps``) or ``train_seconds``
    (wall time, which the machine's load moves; ``metric_vs_time``). A line per method through its
    checkpoints (mean over seeds), a band of ± one standard deviation over seeds where there are
    several, pretrain dashed, the reference's final value dotted; the caption says so. ``pool``:
    ``long`` holds validations on the pool (opera.retrieval.validation.curves), saved as ``<kind>_pool`` and
    captioned as the pool's metrics."""
    kind, label = PROGRESS_AXES[x]
    kind, points = (f"{kind}_pool", "validation on the pool") if pool else (kind, "evaluated checkpoint")
    out_dir = Path(out_dir)
    paths: list[Path] = []
    for (dataset, model), group in long.groupby(["dataset", "model"], sort=True):
        trained = group[group["method"].map(_trains)]
        scale, unit = 1.0, ""
        if x == "train_seconds":
            max_seconds = float(trained["train_seconds"].max()) if not trained.empty else 0.0
            scale, unit = (60.0, " (min)") if max_seconds > 600 else (1.0, " (s)")
        fig, axes = plt.subplots(1, len(metrics), figsize=(5.2 * len(metrics) + 1.8, 4.6), squeeze=False)
        axes = axes[0]
        for ax, metric in zip(axes, metrics, strict=True):
            for method in ordered(group["method"]):
                runs = group[group["method"] == method]
                if not _trains(method):
                    ax.axhline(
                        runs[metric].mean(),
                        color=method_color(method),
                        linestyle="--",
                        linewidth=1.5,
                        label=display_name(method),
                    )
                    continue
                curve = (
                    runs.groupby("step")
                    .agg(t=(x, "mean"), y=(metric, "mean"), sd=(metric, "std"), n=(metric, "size"))
                    .sort_index()
                )
                band = curve["sd"].fillna(0.0).to_numpy() if (curve["n"] > 1).any() else None
                _method_line(ax, method, curve["t"].to_numpy() / scale, curve["y"].to_numpy(), band)
            ref = final_rows(group[group["method"] == reference])
            if not ref.empty:
                ax.axhline(
                    ref[metric].mean(),
                    color=method_color(reference),
                    linestyle=":",
                    linewidth=1.3,
                    label=f"{display_name(reference)} final",
                )
            ax.set_xlabel(label + unit)
            ax.set_ylabel(metric)
            ax.set_title(metric)
            ax.grid(True, alpha=0.3)
            ax.set_xlim(left=0)
        axes[-1].legend(loc="upper left", bbox_to_anchor=(1.02, 1.0), borderaxespad=0, frameon=False)
        seeds = int(trained["seed"].nunique()) if not trained.empty else 0
        fig.suptitle(f"{dataset} · {model}")
        fig.text(
            0.01,
            -0.02,
            f"Lines: mean over {seeds} seed(s) at each {points}; bands: ± 1 standard deviation "
            f"over seeds; dashed: pretrained model; dotted: {display_name(reference)}'s final value."
            + (" Pool metrics: the validation pool's, not the full corpus's." if pool else ""),
            fontsize=9,
            ha="left",
            va="top",
        )
        paths += save(fig, out_dir / f"{_safe(dataset)}__{_safe(model)}__{kind}")
    return paths


# --- metric vs budget -----------------------------------------------------------------------------


@plt.rc_context(STYLE)
def metric_vs_budget(budgets: pd.DataFrame, out_dir: str | Path, metrics: Sequence[str] = MAIN_METRICS) -> list[Path]:
    """Per dataset x model, one panel per metric against the training budget (steps of a separate
    run, read at its last step): a line per method, mean over seeds with a ± std band. Saves
    ``{dataset}__{model}__metric_vs_budget``."""
    out_dir = Path(out_dir)
    paths: list[Path] = []
    for (dataset, model), group in budgets.groupby(["dataset", "model"], sort=True):
        fig, axes = plt.subplots(1, len(metrics), figsize=(5.2 * len(metrics) + 1.8, 4.2), squeeze=False)
        for ax, metric in zip(axes[0], metrics, strict=True):
            for method in ordered(group["method"]):
                rows = group[group["method"] == method].sort_values("budget")
                band = rows[f"{metric}_std"].fillna(0.0).to_numpy(dtype=float) if (rows["n_seeds"] > 1).any() else None
                _method_line(
                    ax, method, rows["budget"].to_numpy(dtype=float), rows[f"{metric}_mean"].to_numpy(dtype=float), band
                )
            ax.set_xlabel("training budget (steps of a separate run)")
            ax.set_ylabel(metric)
            ax.set_title(metric)
            ax.grid(True, alpha=0.3)
        axes[0][-1].legend(loc="upper left", bbox_to_anchor=(1.02, 1.0), borderaxespad=0, frameon=False)
        fig.suptitle(f"{dataset} · {model}")
        paths += save(fig, out_dir / f"{_safe(dataset)}__{_safe(model)}__metric_vs_budget")
    return paths


# --- training time ---------------------------------------------------------------------------------


@plt.rc_context(STYLE)
def training_time(final: pd.DataFrame, out_dir: str | Path) -> list[Path]:
    """Per dataset x model, a horizontal bar per trained method: training wall time of the final
    checkpoint (mean over seeds, ± std), annotated in seconds. Saves ``{dataset}__{model}__training_time``."""
    out_dir = Path(out_dir)
    paths: list[Path] = []
    for (dataset, model), group in final.groupby(["dataset", "model"], sort=True):
        group = group[group["method"].map(_trains)]
        if group.empty:
            continue
        methods = ordered(group["method"])
        frame = group.set_index("method").loc[methods]
        means = frame["train_seconds_mean"].astype(float).to_numpy()
        stds = frame["train_seconds_std"].astype(float).fillna(0.0).to_numpy()
        fig, ax = plt.subplots(figsize=(7.0, 0.5 * len(methods) + 1.6))
        positions = np.arange(len(methods))
        ax.barh(
            positions,
            means,
            xerr=stds if (stds > 0).any() else None,  # no empty error caps with one seed
            color=[method_color(m) for m in methods],
            alpha=0.85,
            capsize=3,
        )
        top = float(np.nanmax(means + stds)) if len(means) else 1.0
        for pos, mean, std in zip(positions, means, stds, strict=True):
            ax.text(mean + std + 0.01 * top, pos, f"{mean:,.1f} s", va="center", ha="left", fontsize=10)
        ax.set_yticks(positions, [display_name(method) for method in methods])
        ax.invert_yaxis()
        ax.set_xlim(0, top * 1.25 if top > 0 else 1.0)
        ax.set_xlabel("training wall time (s)")
        ax.set_title(f"{dataset} · {model}")
        ax.grid(True, axis="x", alpha=0.3)
        ax.set_axisbelow(True)
        paths += save(fig, out_dir / f"{_safe(dataset)}__{_safe(model)}__training_time")
    return paths


# --- pruning data card -----------------------------------------------------------------------------


def _coverage(entries: Sequence[Mapping], n_train_queries: int | None = None) -> list[tuple[int, float]]:
    """(step, fraction of queries seen) for each log entry whose sampler reports coverage.

    The fraction is of ``n_train_queries`` (all train queries) when given: a pruned method's own
    ``n_queries`` counts only the queries it kept, and would show sp covering 100%.
    """
    points = []
    for entry in entries:
        sampler = entry.get("sampler") or {}
        seen, total = sampler.get("queries_seen"), n_train_queries or sampler.get("n_queries")
        if seen is not None and total:
            points.append((int(entry.get("step", len(points))), float(seen) / float(total)))
    return points


def _pair_scores(score_pairs: pd.DataFrame, kept_pairs: pd.DataFrame | None) -> pd.DataFrame:
    """query_id, doc_id, score and whether the score-pruning method kept the pair."""
    scores = score_pairs[["query_id", "doc_id", "score"]].copy()
    scores["query_id"] = scores["query_id"].astype(str)
    scores["doc_id"] = scores["doc_id"].astype(str)
    if kept_pairs is None:
        scores["kept"] = True
        return scores
    keys = kept_pairs[["query_id", "doc_id"]].astype(str).drop_duplicates()
    keys["kept"] = True
    scores = scores.merge(keys, on=["query_id", "doc_id"], how="left")
    scores["kept"] = scores["kept"].astype("boolean").fillna(False).astype(bool)
    return scores


def _score_panel(ax, scores: pd.DataFrame, pruner: str) -> None:
    values = scores["score"].astype(float).to_numpy()
    bins = np.histogram_bin_edges(values, bins=min(40, max(5, int(np.sqrt(max(len(values), 1))))))
    kept, pruned = values[scores["kept"].to_numpy()], values[~scores["kept"].to_numpy()]
    ax.hist(
        [pruned, kept],
        bins=bins,
        stacked=True,
        color=["#bdbdbd", method_color(pruner)],
        edgecolor="white",
        linewidth=0.4,
        label=[
            f"pruned by {display_name(pruner)} (n={len(pruned):,})",
            f"kept by {display_name(pruner)} (n={len(kept):,})",
        ],
    )
    ax.set_xlabel("base-model cosine score of positive pair")
    ax.set_ylabel("pairs (count)")
    ax.set_title("pair scores: kept vs pruned")
    ax.legend(loc="best", frameon=False)
    ax.grid(True, alpha=0.3)


def _final_coverage_panel(ax, scores: pd.DataFrame, pruner: str, has_kept: bool, curves: Mapping[str, list]) -> None:
    n_queries = scores["query_id"].nunique()
    labels, fractions, colors = [], [], []
    if has_kept and n_queries:
        labels.append(f"{display_name(pruner)}\n(kept pairs)")
        fractions.append(scores.loc[scores["kept"], "query_id"].nunique() / n_queries)
        colors.append(method_color(pruner))
    for method in ordered(curves):
        labels.append(f"{display_name(method)}\n(seen)")
        fractions.append(curves[method][-1][1])
        colors.append(method_color(method))
    positions = np.arange(len(labels))
    ax.bar(positions, fractions, color=colors, alpha=0.85)
    for pos, frac in zip(positions, fractions, strict=True):
        ax.text(pos, frac + 0.02, f"{100 * frac:.1f}%", ha="center", va="bottom", fontsize=10)
    ax.set_xticks(positions, labels)
    ax.set_ylim(0, 1.12)
    ax.set_ylabel("fraction of train queries")
    ax.set_title(f"query coverage (n = {n_queries:,} train queries)")
    ax.grid(True, axis="y", alpha=0.3)
    ax.set_axisbelow(True)


def _coverage_curve_panel(ax, curves: Mapping[str, list]) -> None:
    for method in ordered(curves):
        points = curves[method]
        if len(points) < 2:
            continue
        steps, fracs = zip(*points, strict=True)
        ax.plot(
            steps,
            fracs,
            color=method_color(method),
            marker=method_marker(method),
            markersize=4,
            linewidth=2.2 if highlighted(method) else 1.4,
            label=display_name(method),
        )
    ax.set_xlabel("training step")
    ax.set_ylabel("fraction of train queries seen")
    ax.set_ylim(0, 1.05)
    ax.set_title("query coverage during training")
    ax.legend(loc="lower right", frameon=False)
    ax.grid(True, alpha=0.3)


@plt.rc_context(STYLE)
def pruning_card(
    score_pairs: pd.DataFrame,
    kept_pairs: pd.DataFrame | None,
    train_logs: Mapping[str, Sequence[Mapping]],
    out_path_stem: str | Path,
    pruner: str,
    title: str = "",
) -> list[Path]:
    """The pruning data card: (left) base-model scores of the train positive pairs, kept vs pruned
    by ``pruner`` (a score-pruning method: sp); (right) query coverage: the fraction of train queries
    with a kept pair, and for each train log reporting ``queries_seen``/``n_queries`` the fraction
    seen by the end of training. When some log has several coverage entries, a third panel shows
    coverage vs training step. Saves ``out_path_stem``.png/.pdf."""
    n_train_queries = score_pairs["query_id"].nunique()
    curves = {m: _coverage(entries, n_train_queries) for m, entries in train_logs.items()}
    curves = {m: c for m, c in curves.items() if c}
    show_curve = any(len(c) > 1 for c in curves.values())
    fig, axes = plt.subplots(1, 3 if show_curve else 2, figsize=(5.0 * (3 if show_curve else 2), 4.2))
    scores = _pair_scores(score_pairs, kept_pairs)
    _score_panel(axes[0], scores, pruner)
    _final_coverage_panel(axes[1], scores, pruner, kept_pairs is not None, curves)
    if show_curve:
        _coverage_curve_panel(axes[2], curves)
    if title:
        fig.suptitle(f"pruning data card · {title}")
    return save(fig, Path(out_path_stem))


# --- schedules -------------------------------------------------------------------------------------


# --- sampler diagnostics ---------------------------------------------------------------------------
