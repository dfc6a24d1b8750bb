"""The workflow's rules as written in its .smk files, for tests that check rules against
their scripts (read as text: the tests must not depend on the code they check)."""

import re
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
RULE = re.compile(r"^(?:rule|checkpoint) (\w+):\n((?:[ \t]+.*\n|\n)*)", re.MULTILINE)
USE_RULE = re.compile(r"^use rule (\w+) as (\w+) with:", re.MULTILINE)


def rules(root: Path = REPO_ROOT) -> dict[str, dict]:
    """Rule name -> {'conda': path or None, 'script': path or None, 'file': smk}; a rule made
    by `use rule A as B with:` has A's conda and script (no rule here overrides them)."""
    found = {}
    smks = sorted([root / "Snakefile", *(root / "workflow" / "rules").glob("*.smk")])
    for smk in smks:
        for name, body in RULE.findall(smk.read_text()):
            entry = {"file": smk.name}
            for key in ("conda", "script"):
                match = re.search(rf"^\s+{key}:\s*\n\s+\"([^\"]+)\"", body, re.MULTILINE)
                entry[key] = (smk.parent / match.group(1)).resolve() if match else None
            found[name] = entry
    for smk in smks:
        for parent, name in USE_RULE.findall(smk.read_text()):
            found[name] = {**found[parent], "file": smk.name}
    return found
