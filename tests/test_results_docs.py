"""Results are data: the records in benchmarks/results/*.json follow one schema, docs/results.md and the README's
headline table are exactly what they render to, and `record_result` keeps each file sorted and byte-stable.
Also: every test a doc cites exists, and every results record a doc cites exists. Fast: no training, no DVC."""

from __future__ import annotations

import json
import re

import pytest
import yaml

from benchmarks import common, render
from tests.conftest import REPO

DOCS = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
RESULTS_FILES = sorted(common.RESULTS_DIR.glob("*.json"))


@pytest.mark.parametrize("path", RESULTS_FILES, ids=lambda p: p.name)
def test_every_record_follows_the_schema_and_each_file_is_in_its_one_spelling(path):
    text = path.read_text(encoding="utf-8")
    records = json.loads(text)
    assert isinstance(records, list) and records
    problems = {r.get("figure"): common.check_record(r) for r in records if common.check_record(r)}
    assert problems == {}, f"{path.name}: {problems}"
    assert {r["workload"] for r in records} == {path.stem}, f"{path.name}: records of another workload"
    figures = [r["figure"] for r in records]
    assert len(figures) == len(set(figures)), f"{path.name}: a figure recorded twice"
    assert text == common.results_bytes(records), f"{path.name} is not sorted/indented as record_result writes it"


def test_the_rendered_results_page_and_readme_table_match_the_records():
    for path, text in render.outputs().items():
        assert path.read_text(encoding="utf-8") == text, (
            f"{path.relative_to(REPO)} is not what the records render: run `python -m benchmarks.render` (make docs)"
        )


def test_every_headline_figure_has_a_record():
    figures = {r["figure"] for records in render.load_records().values() for r in records}
    assert set(render.HEADLINE) <= figures


def test_record_result_replaces_a_figures_record_and_writes_stable_bytes(tmp_path):
    def record(figure: str, value: float, **fields):
        return common.record_result(
            "movielens",
            figure,
            value,
            description="d",
            unit="MSE",
            command="python -m benchmarks.movielens",
            results_dir=tmp_path,
            **fields,
        )

    path = tmp_path / "movielens.json"
    record("movielens.z.val_mse", 1.0)
    first = record("movielens.bias.val_mse", 0.80, spread=0.01, seeds=[1, 2], per_seed=[0.79, 0.81])
    assert first["commit"].split("-")[0] == common._git("rev-parse", "HEAD")
    assert first["machine"]["cores"] and len(first["machine"]["loadavg"]) == 3
    again = record("movielens.bias.val_mse", 0.75, note="rerun")
    records = json.loads(path.read_text(encoding="utf-8"))
    assert [r["figure"] for r in records] == ["movielens.bias.val_mse", "movielens.z.val_mse"]  # sorted, replaced
    assert records[0] == again and records[0]["value"] == 0.75 and records[0]["seeds"] is None
    assert path.read_text(encoding="utf-8") == common.results_bytes(records)  # one spelling: re-serialising is a no-op
    before = path.read_bytes()
    path.write_text(common.results_bytes(list(reversed(records))), encoding="utf-8")  # order does not matter
    assert path.read_bytes() == before
    assert before.endswith(b"}\n]\n") and b'  "command": ' in before  # 2-space indent, keys sorted, final newline


def test_record_result_refuses_a_record_that_breaks_the_schema_and_writes_nothing(tmp_path):
    with pytest.raises(ValueError, match="per_seed needs seeds"):
        common.record_result(
            "text",
            "text.x.val_loss",
            1.0,
            description="d",
            unit="nats/char",
            command="c",
            per_seed=[1.0],
            results_dir=tmp_path,
        )
    with pytest.raises(ValueError, match="starting with '<workload>.'"):
        common.record_result(
            "text", "imdb.x.val_loss", 1.0, description="d", unit="", command="c", results_dir=tmp_path
        )
    assert not list(tmp_path.iterdir())


def test_the_renderer_formats_values_with_one_number_of_decimals():
    r = {"value": 88.8, "spread": 0.71, "per_seed": [89.12, 87.99, 89.3], "seeds": [42, 43, 44], "unit": "%"}
    assert render.value(r) == "88.80 ± 0.71%"
    assert render.seeds(r) == "42, 43, 44: 89.12 / 87.99 / 89.30"
    assert render.value({"value": 4438, "spread": None, "per_seed": None, "unit": "s"}) == "4,438 s"


def cited_tests() -> dict[str, set[str]]:
    # test_ names not inside a record id (imdb.cnn.test_accuracy)
    return {path.name: set(re.findall(r"(?<![\w.])test_[a-z0-9_]+", path.read_text(encoding="utf-8"))) for path in DOCS}


def test_every_test_the_docs_cite_exists():
    sources = "\n".join(p.read_text(encoding="utf-8") for p in (REPO / "tests").rglob("*.py"))
    defined = set(re.findall(r"^\s*(?:async )?def (test_[a-z0-9_]+)", sources, re.MULTILINE))
    files = {p.stem for p in (REPO / "tests").glob("test_*.py")}
    missing = {doc: sorted(names - defined - files) for doc, names in cited_tests().items() if names - defined - files}
    assert missing == {}


def id_pattern(reference: str) -> re.Pattern:
    """A doc's reference to records as a regex: `<name>` one id part, `*` or a trailing `...` anything,
    `{a,b}` either, `[.x]` optional."""
    out = ""
    for token in re.findall(r"<[^>]+>|\{[^}]+\}|\[[^\]]+\]|\.\.\.$|\*|[^<{\[*]", reference):
        if token.startswith("<"):
            out += r"[^.]+"
        elif token.startswith("{"):
            out += "(" + "|".join(re.escape(t.strip()) for t in token[1:-1].split(",")) + ")"
        elif token.startswith("["):
            out += "(" + re.escape(token[1:-1]) + ")?"
        elif token in ("*", "..."):
            out += ".*"
        else:
            out += re.escape(token)
    return re.compile(out)


def is_param(reference: str, params: dict) -> bool:
    """`dogscats.train`, `dogscats.prepare.max_per_class=null` or `imdb.models.<name>`: a params.yaml key (its
    start, before any `...`), not a record."""
    node = params
    for key in reference.split("=")[0].split("...")[0].strip(".").split("."):
        if not isinstance(node, dict) or not (key in node or key.startswith("<")):
            return False
        node = next(iter(node.values())) if key.startswith("<") else node[key]
    return True


def test_every_results_record_the_docs_cite_exists():
    figures = [r["figure"] for records in render.load_records().values() for r in records]
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    workloads = "|".join(render.WORKLOADS)
    unknown = {}
    for path in DOCS:
        if path.name == "results.md":
            continue
        for reference in re.findall(rf"`((?:{workloads})\.[^`\s]+)`", path.read_text(encoding="utf-8")):
            if is_param(reference, params):
                continue
            pattern = id_pattern(reference)
            if not any(pattern.fullmatch(f) for f in figures):
                unknown.setdefault(path.name, []).append(reference)
    assert unknown == {}


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: lowercase, punctuation dropped, spaces to hyphens."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def test_every_link_between_the_docs_points_at_a_file_and_heading_that_exist():
    broken = []
    for path in DOCS:
        for target in re.findall(r"\]\(([^)\s]+)\)", path.read_text(encoding="utf-8")):
            if re.match(r"[a-z]+://", target):
                continue
            name, _, anchor = target.partition("#")
            linked = (path.parent / name).resolve() if name else path
            if not linked.is_file():
                broken.append(f"{path.name}: {target}")
            elif anchor and anchor not in {slug(h) for h in re.findall(r"^#+ (.+)$", linked.read_text(), re.MULTILINE)}:
                broken.append(f"{path.name}: {target} (no such heading)")
    assert broken == []


def test_the_readme_is_a_front_door():
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    assert len(readme.encode()) <= 12 * 1024, "README.md over 12 KB: details belong in docs/"
    assert "make run" in readme and "make test" in readme and "LESSON5_MIRROR=../shared/data make run" in readme


def test_the_readme_stays_a_front_door_within_12_kb():
    """Findings and history go to docs/: the README keeps what, the two commands, how it fits, results, links."""
    assert len((REPO / "README.md").read_bytes()) <= 12 * 1024
