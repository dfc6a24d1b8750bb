"""Regenerate the figures of the documentation from the workflow itself.

Run from anywhere with the project's Python (`make docs`); needs Graphviz `dot` on PATH.
"""

import subprocess
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
DOCS_DIR = REPO_ROOT / "docs"
SNAKEMAKE = Path(sys.executable).parent / "snakemake"


def make_rulegraph() -> None:
    """docs/rulegraph.svg and .png: the rules of the default run and how they depend."""
    dot_source = subprocess.run(
        [str(SNAKEMAKE), "--rulegraph"],
        cwd=REPO_ROOT,
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    for fmt in ("svg", "png"):
        out = DOCS_DIR / f"rulegraph.{fmt}"
        subprocess.run(["dot", f"-T{fmt}", "-o", str(out)], input=dot_source, check=True, text=True)
        print(f"wrote {out.relative_to(REPO_ROOT)}")


if __name__ == "__main__":
    make_rulegraph()
