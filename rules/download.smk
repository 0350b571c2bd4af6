rule download:
    """Fetch or copy a dataset, validate it, and write normalized parquet tables."""
    output:
        directory(data_dir()),
    log:
        "logs/download/{dataset}.log",
    benchmark:
        "benchmarks/download/{dataset}.tsv"
    threads: 1
    resources:
        mem_mb=RESOURCES["mem_mb"],
        runtime=RESOURCES["runtime"],
    params:
        name=lambda wc: wc.dataset,
        spec=lambda wc: config["datasets"][wc.dataset],
        options=config["data"],
    script:
        "../workflow_scripts/download.py"
