"""``docs/REPRODUCTION.md``, generated from the runs of the reproduction targets (``make reproduction-report``).

``python -m multirun_analysis reproduction [ROOT] --out docs`` reads ``ROOT/<target>/<scale>/`` for every
target of ``targets.TARGETS`` (the largest scale that holds runs, or ``--scale``), and writes
``docs/REPRODUCTION.md`` and the small PNG figures it embeds (``docs/reproduction/*.png``). Per
experiment: the command, the scale actually run (tasks, examples, split, seeds, backend, wall time,
code version: read from each run's run.json and .hydra/config.yaml and the target's
reproduction.json, never from folder names), the paper's summary table, the figure(s), and each
claim of ``claims.CLAIMS`` with its verdict computed by ``rules``. A target without runs is listed
as not run. The document is regenerated whole; never edit it by hand.
"""

from __future__ import annotations

import datetime as _dt
import io
import json
import logging
from collections import Counter
from pathlib import Path

import numpy as np
import pandas as pd
import yaml
from plasticity_lab.summary import format_duration  # torch-free: the one wording of a duration

from .. import plots
from ..loading import NoRunsError, find_run_dirs, load_runs, read_run
from ..names import format_value
from ..summaries import condition_summaries, resolve_ddof, std_convention
from ..tables import pivot_table, summary_table
from . import rules
from .claims import CLAIMS
from .targets import DEFAULT_ROOT, PROVENANCE, SCALES, TEST_SPLIT, Target, by_priority

log = logging.getLogger("multirun_analysis")

DOC_NAME = "REPRODUCTION.md"
FIGURES = "reproduction"  # folder next to the document
DPI = 80  # small PNGs (a figure stays well under 100 KB)
SPLIT_NOTE = ("MNIST **test** split (10,000 images; the papers trained on the 60,000-image training split, "
              "not available here)")
MAX_FIGURE_BYTES = 100_000


def available_scale(t: Target, root: Path, scale: str | None = None) -> str | None:
    """The scale to report: ``scale`` if given, else the largest of full, reduced, smoke whose folder
    holds runs (None: nothing ran)."""
    for s in ([scale] if scale else SCALES):
        folder = t.scale_dir(s, root)
        if folder.is_dir() and any(folder.rglob("run.json")):
            return s
    return None


def _provenance(t: Target, scale: str, root: Path) -> dict:
    path = t.scale_dir(scale, root) / PROVENANCE
    return json.loads(path.read_text()) if path.exists() else {}


def _commands(t: Target, scale: str, root: Path) -> list[str]:
    """The Hydra commands that made the runs, from each sweep's multirun.yaml (its overrides)."""
    out = []
    for sweep in t.sweeps:
        path = t.sweep_dir(sweep, scale, root) / "multirun.yaml"
        if not path.exists():
            continue
        overrides = (yaml.safe_load(path.read_text()) or {}).get("hydra", {}).get("overrides", {})
        hydra = [o for o in overrides.get("hydra", []) if o != "hydra.mode=MULTIRUN"]
        out.append(" ".join(["python train.py -m", *overrides.get("task", []), *hydra]))
    return out


def _values(records, key: str) -> list:
    seen = []
    for r in records:
        v = r.config.get(key)
        if v not in seen:
            seen.append(v)
    return seen


def _one_or_all(values) -> str:
    def text(v):
        if v is None:
            return "none"
        return f"{v:,}" if isinstance(v, int) and not isinstance(v, bool) else format_value(v)

    return ", ".join(map(text, values))


def _parse_time(text):
    try:
        return _dt.datetime.fromisoformat(text)
    except (TypeError, ValueError):
        return None


def scale_facts(t: Target, scale: str, root: Path, df: pd.DataFrame) -> list[tuple[str, str]]:
    """(what, value) rows of what actually ran, from the runs' run.json and config and the target's
    reproduction.json."""
    folder = t.scale_dir(scale, root)
    records = [read_run(d) for d in find_run_dirs(folder)]
    loaded = {Path(df.attrs["root"]) / r for r in df["run_id"].unique()}
    used = [r for r in records if r.path.resolve() in {p.resolve() for p in loaded}]
    status = Counter(r.status for r in records)
    prov = _provenance(t, scale, root)
    rows = [("Scale", f"**{prov.get('scale', 'unknown (no ' + PROVENANCE + ')')}**"
                      + (f": {t.notes[scale]}" if t.notes.get(scale) else "") + f" (the paper: {t.paper_scale})")]
    names = _values(used, "dataset.name")
    regression = any(n in ("bit_flipping", "slowly_changing_regression") for n in names)
    rows.append(("Bins per run" if regression else "Tasks per run", _one_or_all(_values(used, "num_tasks"))))
    if regression:
        rows.append(("Steps per task (bin)", _one_or_all(_values(used, "dataset.bin_size"))))
        rows.append(("Period (flip_after) / target LTUs", f"{_one_or_all(_values(used, 'dataset.flip_after'))} / "
                     f"{_one_or_all(_values(used, 'dataset.target_units'))}"))
    else:
        split = _values(used, "dataset.split")
        rows.append(("Examples per task", f"{_one_or_all(_values(used, 'dataset.images_per_task'))} "
                     f"(subset {_one_or_all(_values(used, 'dataset.subset'))}, shuffle_seed "
                     f"{_one_or_all(_values(used, 'dataset.shuffle_seed'))})"))
        rows.append(("Data", f"{_one_or_all(names)}, split **{_one_or_all(split)}**"
                     + (f": {SPLIT_NOTE}" if split == ["test"] else "")))
    seeds = sorted({int(r.seed) for r in used if r.seed == r.seed})
    per_condition = sorted(set(df.drop_duplicates("run_id").groupby("condition").size()))
    rows.append(("Seeds", f"{', '.join(map(str, seeds))} ({'/'.join(map(str, per_condition))} per condition)"))
    excluded = ", ".join(f"{n} {s}" for s, n in status.items() if s != "completed")
    rows.append(("Runs", f"{len(used)} completed and loaded" + (f"; not loaded: {excluded}" if excluded else "")))
    steps = df.groupby("run_id")["step"].max().sum()
    rows.append(("Network-steps trained", f"{int(steps):,}"))
    rows.append(("Backend / device", f"{_one_or_all(sorted({str(r.info.get('backend')) for r in used}))} / "
                 f"{_one_or_all(sorted({str(r.info.get('device')) for r in used}))}"))
    starts = [t0 for r in used if (t0 := _parse_time(r.info.get("start_time")))]
    ends = [t1 for r in used if (t1 := _parse_time(r.info.get("end_time")))]
    resumes = sum(int(r.info.get("resumes", 0) or 0) for r in used)
    if starts and ends:
        span = (max(ends) - min(starts)).total_seconds()
        wall = (f"{format_duration(span)} from the first run's start ({min(starts):%Y-%m-%d %H:%M} UTC) to the last "
                f"run's end; {resumes} resume(s)")
        invocations = prov.get("invocations", [])
        if invocations:
            spent = sum(i.get("wall_seconds") or 0 for i in invocations)
            projected = invocations[-1].get("projected_seconds")
            wall += (f"; the make target ran {len(invocations)} time(s), {format_duration(spent)} in all, on "
                     f"{invocations[-1].get('cpu_count')} CPU core(s)"
                     + (f" (its projection: {format_duration(projected)})" if projected else ""))
        rows.append(("Wall time", wall))
    commits = sorted({(str(r.info.get("git_commit"))[:10], bool(r.info.get("git_dirty"))) for r in used})
    rows.append(("Code", ", ".join(f"`{c}`" + (" (uncommitted changes)" if d else "") for c, d in commits)))
    versions = sorted({str((r.info.get("versions") or {}).get("torch")) for r in used})
    rows.append(("torch", ", ".join(versions)))
    return rows


def _save(fig, path: Path) -> Path:
    """A small PNG: ``DPI`` dots per inch, quantised to a 256-colour palette (lines and bands need no more)."""
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=DPI, bbox_inches="tight")  # the legend below the panels, whole
    buffer.seek(0)
    Image.open(buffer).convert("RGB").quantize(colors=256).save(path, optimize=True)
    if path.stat().st_size > MAX_FIGURE_BYTES:
        log.warning("%s is %d bytes (over %d)", path, path.stat().st_size, MAX_FIGURE_BYTES)
    return path


def figures(t: Target, df: pd.DataFrame, out: Path) -> list[tuple[str, Path]]:
    """(caption, PNG path) of the experiment's figures."""
    made = []
    metric_title = "online accuracy" if t.metric == "accuracy" else "squared online error per bin"
    data = f" ({SPLIT_NOTE.split(' (')[0]})" if t.metric == "accuracy" else ""
    shown, which = None, ""
    if t.name in GRID_STRATEGY:
        made.append((f"{t.name}: mean accuracy over all tasks over c_low x c_high{data}",
                     _save(plots.plot_grid(df, GRID_KEYS[0], GRID_KEYS[1], stat=t.statistic), out / f"{t.name}-grid.png")))
        summary = condition_summaries(df, t.metric)
        shown = summary.sort_values(t.statistic, ascending=False)["condition"].head(GRID_CURVES).tolist()
        which = f" (the {GRID_CURVES} best cells)"
    made.append((f"{t.name}: {metric_title} per task{data}{which}, running mean over 5 tasks, mean ± std over seeds",
                 _save(plots.plot_curves(df, t.metric, conditions=shown), out / f"{t.name}-{t.metric}.png")))
    if t.name == "purice-main-relu" and (df["metric"] == "effective_rank").any():
        made.append((f"{t.name}: effective rank per hidden layer (every 5 tasks)",
                     _save(plots.plot_curves(df, "effective_rank"), out / f"{t.name}-effective_rank.png")))
    return made


GRID_KEYS = ("learner.c_low", "learner.c_high")
GRID_CURVES = 5  # accuracy curves of a grid: its best cells
GRID_STRATEGY = {"purice-grid-relu": ("relu strategy", -0.5, 0.5), "purice-grid-tanh": ("tanh strategy", 0.5, 0.2)}


def grid_findings(t: Target, df: pd.DataFrame) -> list[str]:
    """The best cell of a coefficient grid and where the strategy's own coefficients rank (no claim)."""
    name, c_low, c_high = GRID_STRATEGY[t.name]
    runs = df[df["metric"] == "accuracy"].groupby("run_id").agg(
        value=("value", "mean"), c_low=("learner.c_low", "first"), c_high=("learner.c_high", "first"))
    cells = runs.groupby(["c_low", "c_high"])["value"].mean().sort_values(ascending=False)
    (best_low, best_high), best = cells.index[0], cells.iloc[0]
    lines = [f"- Best cell: c_low = {best_low:g}, c_high = {best_high:g}: {100 * best:.1f}% mean accuracy over all "
             f"tasks ({SPLIT_NOTE.split(' (')[0]}); {len(cells)} cells."]
    key = [(a, b) for a, b in cells.index if np.isclose(a, c_low) and np.isclose(b, c_high)]
    if key:
        own = cells.loc[key[0]]
        rank = int((cells > own).sum()) + 1  # ties share a rank
        lines.append(f"- The {name}'s own coefficients (c_low = {c_low:g}, c_high = {c_high:g}): "
                     f"{100 * own:.1f}%, rank {rank} of {len(cells)} (cells better: {rank - 1}).")
    return lines


def experiment_section(t: Target, root: Path, out: Path, scale: str | None = None) -> tuple[list[str], dict]:
    """The lines of one experiment's section and its verdict counts."""
    head = [f"## `{t.name}`: {t.title} {t.paper}", ""]
    chosen = available_scale(t, root, scale)
    counts = Counter()
    claims = CLAIMS.get(t.name, [])
    if chosen is None:
        counts[rules.NOT_CHECKED] += len(claims)
        lines = head + [f"**Not run.** No runs under `{t.scale_dir('<scale>', root)}`. Run it with "
                        f"`{t.command('full')}` (or `SCALE=reduced`), then `make reproduction-report`.", ""]
        lines += [f"Claims not checked: {'; '.join(c.text for c in claims)}." if claims else "", ""]
        return lines, {"scale": "not run", "counts": counts}
    folders = [t.sweep_dir(s, chosen, root) for s in t.sweeps if t.sweep_dir(s, chosen, root).is_dir()]
    try:
        df = load_runs(*folders)
    except NoRunsError as err:
        counts[rules.NOT_CHECKED] += len(claims)
        return head + [f"**No completed runs** at scale {chosen}: {err}", ""], {"scale": f"{chosen} (none completed)",
                                                                                  "counts": counts}
    ddof = resolve_ddof(df, None)
    lines = head + [f"Command: `{t.command(chosen)}`, which ran", "", "```"]
    lines += _commands(t, chosen, root) + ["```", ""]
    lines += ["| Scale actually run | |", "|:---|:---|"]
    lines += [f"| {what} | {value} |" for what, value in scale_facts(t, chosen, root, df)]
    lines += [f"| Differs from the paper | {'; '.join(t.differences)} |" if t.differences else "", ""]
    if t.name in GRID_STRATEGY:
        table = pivot_table(df, GRID_KEYS[0], GRID_KEYS[1], stat=t.statistic, ddof=ddof, best="table")
    else:
        table = summary_table(df, stats=[t.statistic], metric=t.metric, ddof=ddof)
    where = f" On the {SPLIT_NOTE}." if t.metric == "accuracy" else ""
    lines += [f"**Table** ({'[P]: mean over all tasks' if t.paper == '[P]' else '[J]: last 15% of tasks' if t.paper == '[J]' else '[D]: mean over all bins'}; "
              f"std over seeds: {std_convention(ddof)}).{where}", "", table.to_markdown(), ""]
    for caption, path in figures(t, df, out / FIGURES):
        lines += [f"![{caption}]({FIGURES}/{path.name})", "", f"*{caption}.*", ""]
    if t.name in GRID_STRATEGY:
        lines += ["Findings (no claim of the issue's list; the grid is reported for the reader):", "",
                  *grid_findings(t, df), ""]
    if claims:
        lines += [f"**Claims** (numbers: {'online accuracy on the ' + SPLIT_NOTE if t.metric == 'accuracy' else 'squared online error'}; "
                  f"scale: {chosen}):", "", "| claim | rule | verdict | why (the numbers) |", "|:---|:---|:---|:---|"]
        for c in claims:
            v = c.check(df, ddof)
            counts[v.verdict] += 1
            lines.append(f"| {c.paper} {c.text} | {c.rule} | **{v.verdict}** | {v.why.replace('|', '/')} |")
        lines.append("")
    elif t.name not in GRID_STRATEGY:
        lines += ["No claim about this experiment is on the issue's list; the table and figure are for the reader.", ""]
    return lines, {"scale": chosen, "counts": counts}


def build_document(root=DEFAULT_ROOT, out="docs", scale: str | None = None) -> Path:
    """Write ``out/REPRODUCTION.md`` and ``out/reproduction/*.png`` from the runs under ``root``."""
    import matplotlib

    matplotlib.use("Agg")
    root, out = Path(root), Path(out)
    fig_dir = out / FIGURES
    if fig_dir.is_dir():
        for old in fig_dir.glob("*.png"):  # regenerated whole
            old.unlink()
    sections, summary = [], []
    for t in by_priority():
        lines, info = experiment_section(t, root, out, scale)
        sections += lines
        c = info["counts"]
        summary.append(f"| [`{t.name}`](#{t.name}) | {t.paper} {t.title} | {info['scale']} | "
                       f"{c[rules.REPRODUCED]} / {c[rules.PARTLY]} / {c[rules.NOT_REPRODUCED]} / {c[rules.NOT_CHECKED]} |")
    doc = [
        "# Reproduction report",
        "",
        f"Generated {_dt.datetime.now():%Y-%m-%d %H:%M} by `make reproduction-report` "
        f"(`python -m multirun_analysis reproduction {root} --out {out}`) from the runs under `{root}/`. "
        "Do not edit by hand: every number, scale and verdict below is computed from the runs' `run.json`, "
        "`.hydra/config.yaml` and `metrics.csv`.",
        "",
        f"**Data.** The MNIST experiments ran on the {SPLIT_NOTE}, with the one override `{TEST_SPLIT}`; "
        "their numbers are not the papers' numbers and are stated as ours. Each section says which scale "
        "ran: `full` is the paper's tasks and seeds, `reduced` the same conditions with fewer tasks, `smoke` "
        "a 2-task check of the code path whose numbers mean nothing.",
        "",
        "| experiment | what | scale run | claims: reproduced / partly / not reproduced / not checked |",
        "|:---|:---|:---|:---|",
        *summary,
        "",
        "## How the verdicts are computed",
        "",
        "Each claim is judged by one explicit rule on the runs (`multirun_analysis/reproduction/rules.py`); the "
        "table of claims names the rule and gives the numbers behind the verdict. Conditions are picked by their "
        "settings (Hydra choices and config keys), and comparisons are paired by seed (two runs with the same "
        "seed saw the same task sequence).",
        "",
        *rules.rules_text(),
        "",
        *sections,
        "## How to regenerate",
        "",
        "```bash",
        "make reproduce-purice-main-relu SCALE=full      # each target: prints its projected wall time, then runs",
        "make reproduce-purice-main-relu SCALE=full ARGS=--dry-run   # the projection only",
        "make reproduction-report                        # this document and its figures, from reproduction/",
        "```",
        "",
        "Targets, most important first: " + ", ".join(f"`{t.name}`" for t in by_priority()) + ". "
        "A target's runs live in `reproduction/<target>/<scale>/` (git-ignored); re-running the same command "
        "resumes them. `SCALE=reduced` runs the same conditions with fewer tasks.",
        "",
    ]
    out.mkdir(parents=True, exist_ok=True)
    path = out / DOC_NAME
    path.write_text("\n".join(doc))
    return path
