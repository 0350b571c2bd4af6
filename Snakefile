# OPERA: data-pruned finetuning of dense retrievers.
# download -> score -> prune -> finetune -> index -> evaluate -> publish, aggregate, for every
# dataset x model x method x seed in the config. Logic lives in the `opera` package;
# rules only wire files, workflow_scripts/ only translate.
import os

from snakemake.utils import min_version

min_version("9.0")


# The report's front page (snakemake --report <results_dir>/report.html; `make report`).
report: "report/workflow.rst"


# The embedded default, unless --configfile names others (then they alone are used, not merged
# into the default: a smoke config must not inherit the default's datasets).
if not workflow.overwrite_configfiles:

    configfile: os.path.join(workflow.basedir, "config", "config.yaml")


include: "rules/common.smk"
include: "rules/download.smk"
include: "rules/score.smk"
include: "rules/prune.smk"
include: "rules/mine.smk"
include: "rules/finetune.smk"
include: "rules/index.smk"
include: "rules/evaluate.smk"
include: "rules/publish.smk"
include: "rules/aggregate.smk"


# Short jobs run where Snakemake runs (a cluster's login node, which also has network to download):
# submitting them would cost more than they do.
localrules:
    download,
    prune,
    aggregate,


rule all:
    default_target: True
    input:
        rules.aggregate.output,
        [models_dir(*run) for run in finetune_runs()],
