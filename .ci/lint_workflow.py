"""`snakemake --lint` over the workflow: fail on any lint except the one deliberately left.

Left on purpose: "Specify a conda environment or container for each rule". Every rule runs a
script that imports the `opera` package, so all rules share one environment (the project's venv,
or the conda environment of environment.yml with the package installed into it); a per-rule
environment would have to install the package into each of them.
"""

from __future__ import annotations

import re
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
ACCEPTED = {"Specify a conda environment or container for each rule."}


def main() -> int:
    with tempfile.TemporaryDirectory() as workdir:
        result = subprocess.run(
            [sys.executable, "-m", "snakemake", "-s", str(ROOT / "Snakefile"), "--directory", workdir, "--lint"],
            capture_output=True,
            text=True,
        )
    text = result.stdout + result.stderr
    titles = re.findall(r"^    \* (.+?):$", text, flags=re.MULTILINE)
    unexpected = [title for title in titles if title not in ACCEPTED]
    if unexpected or (result.returncode != 0 and not titles):
        print(text)
        print(f"snakemake --lint: {len(unexpected)} lint(s) to fix", file=sys.stderr)
        return 1
    print(f"snakemake --lint: clean ({len(titles)} accepted per-rule environment lints, see {Path(__file__).name})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
