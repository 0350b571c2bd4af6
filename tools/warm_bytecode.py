"""Write the bytecode of what the pipeline's jobs and the tests import, once (make runs this).

Where PYTHONDONTWRITEBYTECODE is set (as on the machines CI runs on), Python never caches
bytecode, so every job and test process compiled torch, transformers and sentence-transformers
from source again: importing sentence_transformers took 14 s instead of 6 s, in each of the test
suite's hundreds of processes. Run with that variable empty, this imports those modules once and
leaves their bytecode beside them; the variable stays in force everywhere else.

Best effort: a module that does not import (an optional dependency left out) is named and
skipped, since it only costs time where it is used.
"""

from __future__ import annotations

import importlib
import sys
import time

MODULES = (
    # the package: every stage's module, the CLI and the report
    "opera.cli",
    "opera.pipeline",
    "opera.training.loop",
    "opera.report.aggregate",
    "opera.report.plots",
    # what the stages import lazily
    "sentence_transformers",
    "sentence_transformers.base.model_card",
    "transformers.models.bert.modeling_bert",
    "transformers.models.bert.tokenization_bert",
    "torch.distributed.nn.functional",
    "torch.utils.tensorboard",
    "tensorboard.backend.event_processing.event_accumulator",
    "faiss",
    "pytrec_eval",
    "matplotlib.pyplot",
    "scipy.stats",
    "datasets",
    "ir_datasets",
    # the workflow and the tests
    "snakemake.api",
    "snakemake.script",
    "pytest",
    "xdist",
)


def main() -> int:
    if sys.flags.dont_write_bytecode:
        print("warm_bytecode: PYTHONDONTWRITEBYTECODE is set for this process: nothing written", file=sys.stderr)
        return 1
    started = time.perf_counter()
    for name in MODULES:
        try:
            importlib.import_module(name)
        except Exception as error:  # an optional module missing: only slower where it is used
            print(f"warm_bytecode: skipped {name} ({type(error).__name__}: {error})", file=sys.stderr)
    seconds = time.perf_counter() - started
    print(f"warm_bytecode: bytecode of {len(MODULES)} modules and what they import, in {seconds:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
