def finetune_dir(dataset, model, method, seed):
    return f"{R}/finetune/{dataset}/{model}/{method}/seed{seed}"


FINETUNE_RUNS = [
    (d, m, method, seed, finetune_dir(d, m, method, seed))
    for d in DATASETS for m in MODELS for method in TRAINED for seed in SEEDS
]


def card_inputs(dataset, model):
    """A pruning data card: sp's kept pairs among all scored pairs, and coverage from the first seed's logs."""
    return {
        "score_pairs": f"{R}/score/{dataset}/{model}/pairs.parquet",
        "sp_pairs": f"{R}/prune/{dataset}/{model}/sp/pairs.parquet",
        "train_logs": {m: f"{finetune_dir(dataset, model, m, SEEDS[0])}/train_log.jsonl" for m in TRAINED},
    }


def plot_files(ext):
    files = []
    for dataset in DATASETS:
        for model in MODELS:
            stem = f"{R}/plots/{dataset}__{model}__"
            files.append(stem + f"metric_vs_time.{ext}")
            if TRAINED:
                files.append(stem + f"pruning_card.{ext}")
                files.append(stem + f"training_time.{ext}")
    return files


def _report_plot(path):
    kind = path.rsplit("__", 1)[1].split(".")[0]
    return report(path, caption=f"../report/{kind}.rst", category="Plots")


rule aggregate:
    """The paper's tables (results, average rank, significance, time to quality) and plots."""
    input:
        metrics=metrics_files(),
        finetune=[run[-1] for run in FINETUNE_RUNS],
        cards=[path for d in DATASETS for m in MODELS if TRAINED for path in (card_inputs(d, m)["score_pairs"], card_inputs(d, m)["sp_pairs"])],
    output:
        results=report(f"{R}/tables/results.csv", caption="../report/results.rst", category="Tables"),
        results_md=f"{R}/tables/results.md",
        results_tex=f"{R}/tables/results.tex",
        avg_rank=report(f"{R}/tables/avg_rank.csv", caption="../report/avg_rank.rst", category="Tables"),
        avg_rank_md=f"{R}/tables/avg_rank.md",
        avg_rank_tex=f"{R}/tables/avg_rank.tex",
        significance=report(f"{R}/tables/significance.csv", caption="../report/significance.rst", category="Tables"),
        time_to_quality=report(f"{R}/tables/time_to_quality.csv", caption="../report/time_to_quality.rst", category="Tables"),
        runs=f"{R}/tables/runs.csv",
        plots=[_report_plot(path) for path in plot_files("png")],
        plots_pdf=plot_files("pdf"),
    params:
        finetune_runs=FINETUNE_RUNS,
        cards=[{"dataset": d, "model": m, **card_inputs(d, m)} for d in DATASETS for m in MODELS if TRAINED],
        tables_dir=f"{R}/tables",
        plots_dir=f"{R}/plots",
    log:
        "logs/aggregate.log",
    benchmark:
        "benchmarks/aggregate.tsv"
    threads: 1
    resources:
        mem_mb=RES["mem_mb"],
        runtime=RES["runtime"],
    script:
        "../workflow_scripts/aggregate.py"
