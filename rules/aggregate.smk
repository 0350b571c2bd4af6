def finetune_runs():
    """(dataset, model, method, seed) of every finetune run in the grid."""
    return [(d, m, method, seed) for d in DATASETS for m in MODELS for method in TRAINED_IN_CONFIG for seed in SEEDS]


def pruning_cards():
    """A pruning data card per dataset x model: what the score-pruning method (sp) keeps of the
    scored pairs, and query coverage from the first seed's train logs. None without training."""
    pruner = method_registry.score_pruned()[0]
    if not TRAINED_IN_CONFIG:
        return []
    return [
        {
            "dataset": d,
            "model": m,
            "pruner": pruner,
            "score_pairs": score_file("pairs.parquet", d, m),
            "pruned_pairs": prune_file("pairs.parquet", d, m, pruner),
            "train_logs": {
                method: f"{finetune_dir(d, m, method, SEEDS[0])}/train_log.jsonl"
                for method in TRAINED_IN_CONFIG
            },
        }
        for d in DATASETS
        for m in MODELS
    ]


def plot_files(ext):
    kinds = ["metric_vs_time"] + (["pruning_card", "training_time"] if TRAINED_IN_CONFIG else [])
    return [plot_file(d, m, kind, ext) for d in DATASETS for m in MODELS for kind in kinds]


def _report_plot(path):
    kind = path.rsplit("__", 1)[1].split(".")[0]
    return report(path, caption=f"../report/{kind}.rst", category="Plots")


def _report_table(name):
    stem = name.split(".")[0]
    return report(table_file(name), caption=f"../report/{stem}.rst", category="Tables")


rule aggregate:
    """The paper's tables (results, average rank, significance, time to quality) and plots."""
    input:
        metrics=metrics_files(),
        finetune=[finetune_dir(*run) for run in finetune_runs()],
        cards=[card[key] for card in pruning_cards() for key in ("score_pairs", "pruned_pairs")],
    output:
        results=_report_table("results.csv"),
        results_md=table_file("results.md"),
        results_tex=table_file("results.tex"),
        avg_rank=_report_table("avg_rank.csv"),
        avg_rank_md=table_file("avg_rank.md"),
        avg_rank_tex=table_file("avg_rank.tex"),
        significance=_report_table("significance.csv"),
        time_to_quality=_report_table("time_to_quality.csv"),
        runs=table_file("runs.csv"),
        plots=[_report_plot(path) for path in plot_files("png")],
        plots_pdf=plot_files("pdf"),
    params:
        train_logs=[(*run, f"{finetune_dir(*run)}/train_log.jsonl") for run in finetune_runs()],
        cards=pruning_cards(),
        tables_dir=f"{RESULTS}/tables",
        plots_dir=f"{RESULTS}/plots",
    log:
        "logs/aggregate.log",
    benchmark:
        "benchmarks/aggregate.tsv"
    threads: 1
    resources:
        mem_mb=RESOURCES["mem_mb"],
        runtime=RESOURCES["runtime"],
    script:
        "../workflow_scripts/aggregate.py"
