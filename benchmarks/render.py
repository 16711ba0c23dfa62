"""`make docs`: docs/results.md and the README's headline table, rendered from benchmarks/results/*.json.

    python -m benchmarks.render            # rewrite both (a second run changes nothing)
    python -m benchmarks.render --check    # exit 1, naming each file that is not what the records render

docs/results.md gets one table per workload: every record, its notes below the table. The README's table between
`<!-- results:start -->` and `<!-- results:end -->` holds the headline rows: the figures listed in HEADLINE
below, in that order (a list here rather than a flag in the records, so that a benchmark rewriting a record
cannot drop it from the README); the one between `<!-- machines:start -->` and `<!-- machines:end -->` what a run
takes (RUN_COST), with the CPU each figure was measured on. Nothing here is typed by hand: change a figure by
re-running its command.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from benchmarks.common import REPO, RESULTS_DIR, check_record, read_results

README = REPO / "README.md"
RESULTS_PAGE = REPO / "docs" / "results.md"
WORKLOADS = {
    "movielens": "MovieLens",
    "imdb": "IMDB + GloVe",
    "dogscats": "Dogs vs Cats",
    "text": "Text",
    "orchestration": "Orchestration",
    "tests": "Test suite",
}
# The README's rows: each fast.ai figure (the default configuration, and the best measured where it differs)
HEADLINE = [
    "movielens.bias.val_mse",
    "movielens.nn.val_mse",
    "imdb.single.test_accuracy",
    "imdb.cnn.test_accuracy",
    "imdb.glove_cnn.test_accuracy",
    "imdb.multi_cnn.test_accuracy",
    "imdb.multi_cnn.keras_style_refit.test_accuracy",
    "imdb.lstm.test_accuracy",
    "imdb.nbsvm.test_accuracy",
    "dogscats.mixed_bfloat16.finetune.val_accuracy",
    "text.char_lstm.val_loss",
    "orchestration.default_run.quiet.make_run_s",
    "orchestration.noop.make_run_s",
]
# The README's "what you will get" rows: time, disk and memory of a run, each with its machine
RUN_COST = [
    "orchestration.default_run.quiet.make_run_s",
    "orchestration.estimate.quick.flow_wall_s",
    "orchestration.estimate.quick.estimate_ratio",
    "orchestration.disk.default_run.total_mb",
    "orchestration.estimate.quick.peak_stage_mb",
]


def load_records(results_dir: Path = RESULTS_DIR) -> dict[str, list[dict]]:
    """{workload: its records sorted by figure}, the known workloads first; an invalid record is an error."""
    found = {path.stem: read_results(path) for path in sorted(Path(results_dir).glob("*.json"))}
    problems = [
        f"{path}: {r.get('figure')}: {'; '.join(p)}"
        for path, records in found.items()
        for r in records
        if (p := check_record(r) + ([] if r.get("workload") == path else [f"workload is not {path}"]))
    ]
    if problems:
        raise ValueError("invalid results records:\n" + "\n".join(problems))
    order = [w for w in WORKLOADS if w in found] + sorted(set(found) - set(WORKLOADS))
    return {w: sorted(found[w], key=lambda r: r["figure"]) for w in order}


def decimals(x: float | int) -> int | None:
    """Decimal places as stored (None: exponent notation)."""
    text = repr(x)
    return None if "e" in text else len(text.partition(".")[2])


def number(x: float | int, places: int | None = None) -> str:
    """With thousands separators; `places` decimals (default: as stored), so 88.8 beside 0.71 reads 88.80."""
    places = decimals(x) if places is None else places
    return repr(x) if decimals(x) is None else f"{x:,.{places}f}"


def cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def with_unit(text: str, unit: str) -> str:
    return f"{text}{unit}" if unit in ("%", "x") else f"{text} {unit}" if unit else text


def places(r: dict) -> int:
    """One number of decimals for a record's value, spread and per-seed values: the most any of them has."""
    found = [decimals(x) for x in [r["value"], r["spread"], *(r["per_seed"] or [])] if x is not None]
    return max((d for d in found if d is not None), default=0)


def value(r: dict) -> str:
    shown = number(r["value"], places(r)) + (f" ± {number(r['spread'], places(r))}" if r["spread"] is not None else "")
    return with_unit(shown, r["unit"])


def seeds(r: dict) -> str:
    if not r["seeds"]:
        return "-"
    listed = ", ".join(str(s) for s in r["seeds"])
    return listed + (": " + " / ".join(number(v, places(r)) for v in r["per_seed"]) if r["per_seed"] else "")


def fastai(r: dict) -> str:
    if r["fastai"] is None:
        return "-"
    return r["fastai"] if isinstance(r["fastai"], str) else with_unit(number(r["fastai"]), r["unit"])


def command(r: dict) -> str:
    return f"`{r['command']}`" if r["command"] else "none (scratch code, not kept)"


def load(r: dict) -> str:
    m = r["machine"]
    shown = " / ".join(f"{x:.2f}" for x in m["loadavg"]) if m["loadavg"] else ""
    note = m.get("loadavg_note")
    return (f"{shown} ({note})" if shown and note else shown or note) + f"; {m['cores']} cores" + cpu_kind(m)


def cpu_kind(m: dict) -> str:
    """How the CPU computes bfloat16, where the record knows its flags: the model name alone does not tell."""
    flags = m.get("cpu_flags")
    if flags is None:
        return ""
    native = [name for flag, name in (("amx_bf16", "AMX"), ("avx512_bf16", "AVX512_BF16")) if flag in flags]
    return f"; {' + '.join(native) if native else 'no bfloat16 instructions'}"


def results_page(workloads: dict[str, list[dict]]) -> str:
    lines = [
        "# Results",
        "",
        "<!-- Generated by `python -m benchmarks.render` (`make docs`) from benchmarks/results/*.json: "
        "do not edit by hand. -->",
        "",
        "Every figure measured for this project, one record each in `benchmarks/results/<workload>.json` "
        "(schema: `RECORD_FIELDS` in `benchmarks/common.py`). A benchmark rewrites its figures' records "
        "when it runs (`make bench`, or the command in each row); records whose note says *migrated* were "
        "moved here from the README's hand-written tables, dated by the commit that added them. Figures "
        "are means over the seeds listed (± the sample standard deviation) unless the description says "
        "otherwise. Load is the machine's load average (1 / 5 / 15 min) at the end of the measurement, "
        "or the README's words for it: on 2 cores, wall times and rates measured under load are "
        "pessimistic; quality figures are not affected.",
        "",
    ]
    for workload, records in workloads.items():
        lines += [
            f"## {WORKLOADS.get(workload, workload)}",
            "",
            "| figure | what | value | seeds: per seed | fast.ai 2017 / goal | command | date | load |",
            "|---|---|---|---|---|---|---|---|",
        ]
        lines += [
            "| "
            + " | ".join(
                cell(c)
                for c in (
                    f"`{r['figure']}`",
                    r["description"],
                    value(r),
                    seeds(r),
                    fastai(r),
                    command(r),
                    r["date"][:10],
                    load(r),
                )
            )
            + " |"
            for r in records
        ]
        lines += ["", "Notes:", ""]
        lines += [
            f"- `{r['figure']}` (commit {r['commit'][:7]}{'-dirty' if r['commit'].endswith('-dirty') else ''})"
            + (f": {r['note']}" if r["note"] else "")
            for r in records
        ]
        lines.append("")
    return "\n".join(lines)


def headline_table(workloads: dict[str, list[dict]]) -> str:
    by_id = {r["figure"]: r for records in workloads.values() for r in records}
    missing = [f for f in HEADLINE if f not in by_id]
    if missing:
        raise ValueError(f"headline figures without a record: {', '.join(missing)}")
    lines = ["| workload | figure | here | fast.ai 2017 / goal |", "|---|---|---|---|"]
    for figure in HEADLINE:
        r = by_id[figure]
        here = f"**{value(r)}**" + (f" (seeds {', '.join(str(s) for s in r['seeds'])})" if r["seeds"] else "")
        lines.append(
            "| "
            + " | ".join(
                cell(c) for c in (WORKLOADS.get(r["workload"], r["workload"]), r["description"], here, fastai(r))
            )
            + " |"
        )
    return "\n".join(lines)


def cost_table(workloads: dict[str, list[dict]]) -> str:
    by_id = {r["figure"]: r for records in workloads.values() for r in records}
    lines = ["| what | measured | CPU (cores; bfloat16) |", "|---|---|---|"]
    for figure in RUN_COST:
        r = by_id[figure]
        m = r["machine"]
        bfloat16 = cpu_kind(m).removeprefix("; ") or "flags not recorded"
        cpu = f"{m['cpu'] or 'unknown'} ({m['cores']} cores; {bfloat16})"
        lines.append("| " + " | ".join(cell(c) for c in (r["description"], f"**{value(r)}**", cpu)) + " |")
    return "\n".join(lines)


def with_block(readme: str, name: str, table: str) -> str:
    start, end = f"<!-- {name}:start -->", f"<!-- {name}:end -->"
    before, found_start, rest = readme.partition(start)
    _, found_end, after = rest.partition(end)
    if not (found_start and found_end):
        raise ValueError(f"README.md needs the markers {start} and {end} around its {name} table")
    return f"{before}{start}\n{table}\n{end}{after}"


def outputs(results_dir: Path = RESULTS_DIR, readme: Path = README) -> dict[Path, str]:
    """{file: the text the records render it to}."""
    workloads = load_records(results_dir)
    return {
        RESULTS_PAGE: results_page(workloads),
        readme: with_block(
            with_block(readme.read_text(encoding="utf-8"), "results", headline_table(workloads)),
            "machines",
            cost_table(workloads),
        ),
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--check", action="store_true", help="change nothing; exit 1 if a file is out of date")
    args = parser.parse_args(argv)
    stale = []
    for path, text in outputs().items():
        if path.exists() and path.read_text(encoding="utf-8") == text:
            continue
        stale.append(path.relative_to(REPO))
        if not args.check:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text, encoding="utf-8")
    if args.check and stale:
        sys.exit(f"out of date: {', '.join(map(str, stale))}; run `python -m benchmarks.render` (`make docs`)")
    print("rewrote " + ", ".join(map(str, stale)) if stale else "docs/results.md and README.md are up to date")


if __name__ == "__main__":
    main()
