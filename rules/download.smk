rule download:
    """Fetch or copy a dataset, validate it, and write normalized parquet tables."""
    output:
        directory(f"{R}/data/{{dataset}}"),
    params:
        spec=lambda wc: config["datasets"][wc.dataset],
        options=config["data"],
    log:
        "logs/download/{dataset}.log",
    benchmark:
        "benchmarks/download/{dataset}.tsv"
    threads: 1
    resources:
        mem_mb=RES["mem_mb"],
        runtime=RES["runtime"],
    script:
        "../workflow_scripts/download.py"
