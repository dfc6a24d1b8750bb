"""The workflow's rules as written in its .smk files, for tests that check rules against
their scripts (read as text: the tests must not depend on the code they check)."""

import re
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
RULE = re.compile(r"^(?:rule|checkpoint) (\w+):\n((?:[ \t]+.*\n|\n)*)", re.MULTILINE)
USE_RULE = re.compile(r"^use rule (\w+) as (\w+) with:", re.MULTILINE)


def rules(root: Path = REPO_ROOT) -> dict[str, dict]:
    """Rule name -> {'conda': path or None, 'script': path or None, 'benchmark': bool,
    'local': bool, 'file': smk}; a rule made by `use rule A as B with:` has A's entries, its
    benchmark where it names its own (no rule here overrides the others)."""
    found = {}
    smks = sorted([root / "Snakefile", *(root / "workflow" / "rules").glob("*.smk")])
    for smk in smks:
        for name, body in RULE.findall(smk.read_text()):
            entry = {"file": smk.name}
            for key in ("conda", "script"):
                match = re.search(rf"^\s+{key}:\s*\n\s+\"([^\"]+)\"", body, re.MULTILINE)
                entry[key] = (smk.parent / match.group(1)).resolve() if match else None
            entry["benchmark"] = bool(re.search(r"^\s+benchmark:", body, re.MULTILINE))
            entry["local"] = bool(re.search(r"^\s+localrule: True", body, re.MULTILINE))
            found[name] = entry
    for smk in smks:
        text = smk.read_text()
        for match in USE_RULE.finditer(text):
            parent, name = match.groups()
            body = text[match.end() :].split("\n\n\n")[0]
            own = bool(re.search(r"^\s+benchmark:", body, re.MULTILINE))
            found[name] = {**found[parent], "file": smk.name}
            found[name]["benchmark"] |= own
    return found
