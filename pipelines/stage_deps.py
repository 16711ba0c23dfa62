"""Each stage's code deps, derived from the code: the project modules its command imports, transitively.

    python -m pipelines.stage_deps            # list what each stage's deps in dvc.yaml lack or hold in excess
    python -m pipelines.stage_deps --write    # rewrite the module deps in dvc.yaml to match the code

tests/test_stage_deps.py fails on any difference, so a change to shared code reruns exactly the stages it affects.
"""

from __future__ import annotations

import argparse
import ast
import re
import sys
from functools import cache
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
PACKAGES = ("stages", "pipelines")


def module_file(name: str, root: Path = REPO) -> Path | None:
    path = root.joinpath(*name.split("."))
    if path.with_suffix(".py").is_file():
        return path.with_suffix(".py")
    if (path / "__init__.py").is_file():
        return path / "__init__.py"
    return None


@cache
def imported_names(path: Path) -> frozenset[str]:
    """Project modules (and names inside them) a file imports anywhere, function bodies included: those run too."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return frozenset(n for n in names if n.split(".")[0] in PACKAGES)


def import_closure(module: str, root: Path = REPO) -> set[str]:
    """Repo-relative paths of every project file that running `python -m module` executes: the module, what it
    imports transitively, and the packages' non-empty __init__.py files on the way."""
    seen: set[Path] = set()
    todo = [module]
    while todo:
        name = todo.pop()
        parts = name.split(".")
        todo.extend(".".join(parts[:i]) for i in range(1, len(parts)))  # parent packages run their __init__
        path = module_file(name, root)
        if path is None or path in seen:
            continue  # a name defined inside a module, not a module
        seen.add(path)
        todo.extend(imported_names(path))
    return {str(p.relative_to(root)) for p in seen if p.name != "__init__.py" or p.read_text().strip()}


def stage_definitions(root: Path = REPO) -> dict[str, dict]:
    """dvc.yaml's stages as written (a foreach stage once: its deps are the same for every item)."""
    stages = yaml.safe_load((root / "dvc.yaml").read_text())["stages"]
    return {name: stage.get("do", stage) for name, stage in stages.items()}


def command_module(cmd: str) -> str:
    match = re.match(r"python -m ([\w.]+)", cmd)
    if not match:
        raise ValueError(f"stage command `{cmd}` is not `python -m <module> ...`")
    return match.group(1)


def differences(root: Path = REPO) -> list[str]:
    """One line per module dep that a stage lacks or holds in excess."""
    problems = []
    for name, stage in stage_definitions(root).items():
        needed = import_closure(command_module(stage["cmd"]), root)
        listed = {dep for dep in stage.get("deps", []) if dep.endswith(".py")}
        problems += [f"{name}: missing dep {path} (imported by its command)" for path in sorted(needed - listed)]
        problems += [f"{name}: dep {path} is not imported by its command" for path in sorted(listed - needed)]
    return problems


def write(root: Path = REPO) -> None:
    """Rewrite each stage's module deps in dvc.yaml (sorted, before its data deps); comments and the rest stay."""
    definitions = stage_definitions(root)
    lines, out, stage = (root / "dvc.yaml").read_text().splitlines(keepends=True), [], None
    i = 0
    while i < len(lines):
        line = lines[i]
        if (match := re.match(r"^  (\w+):\s*$", line)) and match.group(1) in definitions:
            stage = match.group(1)
        out.append(line)
        i += 1
        if stage and (deps := re.match(r"^(\s+)deps:\s*$", line)):
            item = f"{deps.group(1)}  - "
            block = []
            while i < len(lines) and lines[i].startswith(item):
                block.append(lines[i])
                i += 1
            code = sorted(import_closure(command_module(definitions[stage]["cmd"]), root))
            out += [f"{item}{path}\n" for path in code] + [dep for dep in block if not dep.rstrip().endswith(".py")]
    (root / "dvc.yaml").write_text("".join(out))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--write", action="store_true", help="rewrite dvc.yaml's module deps")
    args = parser.parse_args(argv)
    if args.write:
        write()
    problems = differences()
    print("\n".join(problems) or "every stage's deps match the modules its command imports")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
