"""The conda environments in envs/ cannot be solved here (no conda channels), so this test
keeps them honest another way: every rule names one, and it provides, at the versions of
requirements.txt, every third-party package that the rule's script imports, directly or
through the cacflow library (imports followed module by module)."""

from __future__ import annotations

import ast
import importlib.metadata
import re
import sys
from pathlib import Path

import pytest
import yaml
from smk_rules import rules

REPO_ROOT = Path(__file__).resolve().parents[1]
RULES_DIR = REPO_ROOT / "workflow" / "rules"
SCRIPTS_DIR = REPO_ROOT / "workflow" / "scripts"
LIBRARY = "cacflow"
# Packages loaded without an import statement: pydicom finds its decoders as plugins.
RUNTIME_PLUGINS = {
    "pydicom": [
        "pylibjpeg",
        "pylibjpeg-libjpeg",
        "pylibjpeg-openjpeg",
        "pylibjpeg-rle",
        "pyjpegls",
    ],
}
# The same code under another distribution name: the venv (CI, workstations without a GPU)
# installs tensorflow-cpu; the training env installs tensorflow with its CUDA libraries
# (tensorflow[and-cuda]), which also runs on CPUs, at the same version.
SAME_PACKAGE = {"tensorflow-cpu": "tensorflow"}


def normalize(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def pinned_requirements() -> dict[str, str]:
    pins = {}
    for line in (REPO_ROOT / "requirements.txt").read_text().splitlines():
        if "==" in line and not line.startswith("#"):
            name, version = line.split("==", 1)
            pins[normalize(name)] = version.strip()
    return pins


def env_pins(env_file: Path) -> dict[str, str]:
    spec = yaml.safe_load(env_file.read_text())
    pins = {}
    for dep in spec["dependencies"]:
        entries = dep["pip"] if isinstance(dep, dict) else [dep]
        for entry in entries:
            name, _, version = _split(re.sub(r"\[[^\]]*\]", "", entry))  # drop extras
            pins[normalize(name)] = version
    return pins


def _split(entry: str) -> tuple[str, str, str]:
    """'numpy==2.4.6' or 'python=3.11' -> (name, operator, version); 'pip' -> ('pip', '', '')."""
    match = re.fullmatch(r"([A-Za-z0-9_.-]+)\s*(==|=)?\s*(\S*)", entry.strip())
    assert match, f"unreadable dependency {entry!r}"
    return match.group(1), match.group(2) or "", match.group(3)


def imported_modules(path: Path, module_level: bool = False) -> set[str]:
    """Module names imported anywhere in a file, or only by its top-level statements (the
    library uses absolute imports only)."""
    tree = ast.parse(path.read_text())
    names = set()
    for node in tree.body if module_level else ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
            if node.module.split(".")[0] == LIBRARY:  # from cacflow.x import y: y may be a module
                names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names


def third_party_imports(script: Path) -> set[str]:
    """Top-level third-party modules of a script and of the library modules it reaches."""
    seen: set[Path] = set()
    todo = [script]
    external = set()
    while todo:
        path = todo.pop()
        if path in seen:
            continue
        seen.add(path)
        for name in imported_modules(path):
            top = name.split(".")[0]
            if top == LIBRARY:
                base = SCRIPTS_DIR / Path(*name.split("."))
                todo += [m for m in (base.with_suffix(".py"), base / "__init__.py") if m.exists()]
            elif top not in sys.stdlib_module_names and top != "__future__":
                external.add(top)
    return external


def distributions(modules: set[str]) -> set[str]:
    by_module = importlib.metadata.packages_distributions()
    dists = set()
    for module in modules:
        if module == "snakemake":
            continue  # the script object is injected by Snakemake, not imported
        assert module in by_module, f"module {module} is not installed in the test venv"
        dists.update(normalize(d) for d in by_module[module])
    for dist in list(dists):
        dists.update(normalize(p) for p in RUNTIME_PLUGINS.get(dist, []))
    return dists


RULES = rules()
SCRIPTED = sorted(name for name, entry in RULES.items() if entry["script"])


def test_every_rule_with_a_script_names_an_existing_env():
    assert SCRIPTED, "no rules found: the parser of .smk files broke"
    for name in SCRIPTED:
        env = RULES[name]["conda"]
        assert env is not None, f"rule {name} ({RULES[name]['file']}) has no conda: env"
        assert env.exists(), f"rule {name}: {env} does not exist"


@pytest.mark.parametrize("env_file", sorted((REPO_ROOT / "envs").glob("*.yaml")), ids=str)
def test_env_pins_equal_the_requirements_lock(env_file):
    lock = pinned_requirements()
    for name, version in env_pins(env_file).items():
        if name in ("python", "pip"):
            continue
        assert version, f"{env_file.name}: {name} is not pinned"
        locked = next((k for k, v in SAME_PACKAGE.items() if v == name and k in lock), name)
        assert locked in lock, f"{env_file.name}: {name} is not in requirements.txt"
        assert version == lock[locked], f"{env_file.name}: {name}=={version}, lock {lock[locked]}"


@pytest.mark.parametrize("rule", SCRIPTED)
def test_rule_env_provides_what_its_script_imports(rule):
    entry = RULES[rule]
    needed = distributions(third_party_imports(entry["script"]))
    provided = set(env_pins(entry["conda"]))
    provided |= {k for k, v in SAME_PACKAGE.items() if v in provided}
    missing = sorted(needed - provided)
    assert not missing, f"rule {rule}: {entry['conda'].name} lacks {missing}"


def test_import_closure_follows_the_library():
    # process_patient reaches scipy only through cacflow.imaging.segmentation: the walk must see it.
    modules = third_party_imports(SCRIPTS_DIR / "process_patient.py")
    assert {"numpy", "scipy"} <= modules


def test_the_module_the_snakefile_imports_needs_no_third_party_package():
    # common.smk imports cacflow.patients while planning, before any rule env exists.
    assert third_party_imports(SCRIPTS_DIR / "cacflow" / "patients.py") == set()
    assert {"numpy"} <= third_party_imports(SCRIPTS_DIR / "cacflow" / "synthetic" / "synth.py")


def test_the_library_has_no_import_cycle():
    # Module-level imports only: an import inside a function runs once every module loaded.
    graph = {}
    for path in (SCRIPTS_DIR / LIBRARY).rglob("*.py"):
        name = ".".join(path.relative_to(SCRIPTS_DIR).with_suffix("").parts)
        imports = imported_modules(path, module_level=True)
        graph[name.removesuffix(".__init__")] = {n for n in imports if n.startswith(LIBRARY)}
    assert len(graph) > 30 and "cacflow.learning.training" in graph
    done: set[str] = set()

    def visit(name: str, trail: list[str]) -> None:
        assert name not in trail, f"import cycle: {' -> '.join([*trail, name])}"
        if name in done:
            return
        for child in sorted(graph[name] & set(graph)):
            visit(child, [*trail, name])
        done.add(name)

    for name in sorted(graph):
        visit(name, [])
