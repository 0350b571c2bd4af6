rule score:
    """Base-model embeddings of corpus and train queries, positive-pair scores, hard negatives."""
    input:
        data=rules.download.output[0],
    output:
        corpus=f"{R}/score/{{dataset}}/{{model}}/corpus_embeddings.npy",
        queries=f"{R}/score/{{dataset}}/{{model}}/train_query_embeddings.npy",
        pairs=f"{R}/score/{{dataset}}/{{model}}/pairs.parquet",
        negatives=f"{R}/score/{{dataset}}/{{model}}/negatives.parquet",
        report=f"{R}/score/{{dataset}}/{{model}}/score.json",
    params:
        encoding=encoding_settings,
        mining=lambda wc: config["models"][wc.model]["mining"],
        scoring=config["scoring"],
        title_join=config["data"]["title_join"],
    log:
        "logs/score/{dataset}/{model}.log",
    benchmark:
        "benchmarks/score/{dataset}/{model}.tsv"
    threads: RES["threads"]
    resources:
        mem_mb=RES["mem_mb"],
        runtime=RES["runtime"],
        gpu=gpus_for("encode"),
    script:
        "../workflow_scripts/score.py"
