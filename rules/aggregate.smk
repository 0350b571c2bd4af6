rule aggregate:
    """The paper's tables (results, average rank, comparisons, time to quality) and plots."""
    input:
        metrics=metrics_files(),
        per_query=metrics_files("per_query.parquet"),
        finetune=[finetune_dir(*run) for run in finetune_runs()],
        cards=[card[key] for card in pruning_cards() for key in ("score_pairs", "pruned_pairs")],
        pools=[path for _, _, path in pool_reports()],
    output:
        results=_report_table("results.csv"),
        results_md=table_file("results.md"),
        results_tex=table_file("results.tex"),
        avg_rank=_report_table("avg_rank.csv"),
        avg_rank_md=table_file("avg_rank.md"),
        avg_rank_tex=table_file("avg_rank.tex"),
        comparisons=_report_table("comparisons.csv"),
        time_to_quality=_report_table("time_to_quality.csv"),
        paper=_report_table("paper.csv"),
        paper_md=table_file("paper.md"),
        paper_tex=table_file("paper.tex"),
        diagnostics=_report_table("sampler_diagnostics.csv"),
        claims=_report_table("claims.csv"),
        claims_md=table_file("claims.md"),
        budgets=_report_table("budgets.csv"),
        runs=table_file("runs.csv"),
        pool_tables=pool_tables(),
        pages=[_report_page(stem) for stem in opera_html_tables.REPORT_TABLES],
        plots=[_report_plot(path) for path in plot_files("png")],
        plots_pdf=plot_files("pdf"),
    log:
        log_file("aggregate.log"),
    benchmark:
        benchmark_file("aggregate.tsv")
    threads: 1
    resources:
        mem_mb=job_resource("aggregate", "mem_mb"),
        runtime=job_resource("aggregate", "runtime"),
    params:
        **stage_params("aggregate"),
        train_logs=[(*run, f"{finetune_dir(*run)}/train_log.jsonl") for run in finetune_runs()],
        cards=pruning_cards(),
        pool_reports=pool_reports(),
        tables_dir=lambda wildcards, output: os.path.dirname(output.results),
        plots_dir=lambda wildcards, output: os.path.dirname(output.plots[0]),
    script:
        "../workflow_scripts/aggregate.py"
