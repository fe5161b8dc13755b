"""Command line: ``python -m multirun_analysis {report,table,plot,best,status,reproduction} <dirs...>``.

``python -m multirun_analysis <dirs...>`` (no subcommand) is ``report``.
Exit status 0 on success, 2 on a usage or data error (message on stderr).
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from .loading import STATUSES, NoRunsError

SUBCOMMANDS = ("report", "table", "plot", "best", "status", "reproduction")

DESCRIPTION = """\
From any set of runs to the papers' figures and tables.

A run is any folder holding run.json (with .hydra/config.yaml, metrics.csv and
optionally arrays/*.npz next to it), at any depth under the DIRS given. Settings are
read from .hydra/config.yaml and run.json, never from folder names. Only completed
runs are used unless --include says otherwise; excluded runs are listed.

Statistics: mean per-task accuracy over all tasks (Purice 2025) and the mean over
the last 15%% of tasks (Jucas 2025), each as mean +- std over seeds. The std is the
population std (ddof=0, numpy's default) for runs of Jucas's presets, as his table
script, and the sample std (ddof=1) otherwise; tables say which; --ddof picks one.
"""

EPILOG = """\
examples:
  python -m multirun_analysis multirun/2026-11-21/12-00-00
  python -m multirun_analysis report multirun/ --out reports/cbp_rates
  python -m multirun_analysis table multirun/ --rows choice.activation --cols choice.learner --format latex
  python -m multirun_analysis plot multirun/ --kind curves --metric effective_rank --out figs/
  python -m multirun_analysis plot multirun/ --kind grid --x learner.c_low --y learner.c_high
  python -m multirun_analysis best multirun/ --by last15 -q     # prints only the overrides
  python -m multirun_analysis status multirun/2026-11-21/12-00-00   # a running sweep: one line per run
  python -m multirun_analysis reproduction reproduction/ --out docs   # docs/REPRODUCTION.md (make reproduction-report)
"""


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("dirs", nargs="+", metavar="DIR", help="folders to search for runs (any depth)")
    p.add_argument("--include", action="append", choices=[*STATUSES, "all"], metavar="STATUS",
                   help="run statuses to load; repeatable; one of "
                        f"{', '.join(STATUSES)}, all (default: completed)")
    p.add_argument("--last-fraction", type=float, default=0.15,
                   help="fraction of final tasks for the last-N%% statistic (default: 0.15)")
    p.add_argument("--ddof", type=int, choices=[0, 1],
                   help="std over seeds: 0 = population std (numpy's default), 1 = sample std (default: 0 when "
                        "every run is of a jucas/ preset, as Jucas 2025's table; else 1)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m multirun_analysis", description=DESCRIPTION, epilog=EPILOG,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-v", "--verbose", action="store_true", help="log more")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("report", help="write a report folder (report.md, tables, figures)",
                       description="Write a report folder: report.md with the summary tables, the best "
                                   "configuration and the figures embedded, report.html (the same as one "
                                   "self-contained file: figures and table files embedded, to copy from a cluster), "
                                   "plus every table as Markdown/LaTeX/CSV and every figure as PNG/PDF. Never "
                                   "overwrites.")
    _common(p)
    p.add_argument("--out", type=Path, help="report folder (must not exist or be empty; "
                                            "default: reports/<timestamp>)")
    p.add_argument("--window", type=int, default=5, help="running window in tasks for curves (default: 5)")
    p.add_argument("--rows", help="key for the rows of a pivot table, e.g. choice.activation")
    p.add_argument("--cols", help="key for the columns of a pivot table, e.g. choice.learner")
    p.add_argument("--max-curves", type=int, default=10,
                   help="most conditions drawn in the accuracy figure (the best ones; default: 10)")
    p.set_defaults(func=cmd_report)

    p = sub.add_parser("table", help="print a summary table (Markdown, LaTeX or CSV)",
                       description="Print the summary table (conditions x statistics), or with --rows and "
                                   "--cols a pivot table of one statistic (best of the other keys per cell).")
    _common(p)
    p.add_argument("--stat", action="append",
                   help="statistic: mean_accuracy, last15, mean_<metric>, last<pct>_<metric>; repeatable "
                        "(default: mean_<metric> and last15)")
    p.add_argument("--metric", default="accuracy", help="metric for the default statistics (default: accuracy)")
    p.add_argument("--layer", help="layer of a per-layer metric")
    p.add_argument("--rows", help="pivot: key whose values make the rows")
    p.add_argument("--cols", help="pivot: key whose values make the columns")
    p.add_argument("--format", choices=["md", "latex", "csv"], default="md", help="output format (default: md)")
    p.set_defaults(func=cmd_table)

    p = sub.add_parser("plot", help="write one kind of figure as PNG and PDF",
                       description="Write figures (PNG and PDF) and print their paths.")
    _common(p)
    p.add_argument("--kind", choices=["curves", "grid", "vs", "gradcov", "runtime"], default="curves",
                   help="curves: per-task metric (running mean, mean+-std over seeds); grid: heatmap of --stat "
                        "over --x and --y; vs: --stat against --x (log axis); gradcov: arrays/grad_covariance; "
                        "runtime: time_* metrics (default: curves)")
    p.add_argument("--metric", action="append", help="metric(s) for curves (default: accuracy)")
    p.add_argument("--stat", default="mean_accuracy", help="statistic for grid/vs (default: mean_accuracy)")
    p.add_argument("--x", help="config key for the x axis (grid, vs)")
    p.add_argument("--y", help="config key for the y axis (grid)")
    p.add_argument("--linear", action="store_true", help="vs: linear instead of log x axis")
    p.add_argument("--window", type=int, default=5, help="running window in tasks (default: 5)")
    p.add_argument("--out", type=Path, help="output folder (default: reports/<timestamp>)")
    p.set_defaults(func=cmd_plot)

    p = sub.add_parser("best", help="the winning configuration of a sweep as Hydra overrides",
                       description="Rank the conditions by a statistic (mean over seeds) and print the winner "
                                   "and its Hydra overrides, ready to paste after `python train.py`.")
    _common(p)
    p.add_argument("--by", default="mean_accuracy", help="statistic: mean_accuracy (default), last15, ...")
    p.add_argument("--keys", nargs="+", help="keys to render as overrides (default: the swept keys)")
    p.add_argument("--top", type=int, default=5, help="how many of the ranking to show (default: 5)")
    p.add_argument("-q", "--quiet", action="store_true", help="print only the override string")
    p.set_defaults(func=cmd_best)

    p = sub.add_parser("status", help="where every run of a (running) sweep stands, one line each",
                       description="One line per run: its state (running, stale = killed without a word, "
                                   "waiting, failed, diverged, completed), tasks done / total, ETA, the last task's "
                                   "accuracy or error and, for SLURM sweeps, the job id and its state (sacct, else "
                                   "squeue and scontrol); then a summary line. Reads run.json, which a running run "
                                   "rewrites at every flush and checkpoint, and probes each running run's run.lock.")
    p.add_argument("dirs", nargs="+", metavar="DIR", help="sweep or run folders (any depth)")
    p.add_argument("--no-slurm", action="store_true", help="do not ask SLURM for the state of the runs' jobs")
    p.set_defaults(func=cmd_status)

    p = sub.add_parser("reproduction", help="docs/REPRODUCTION.md from the runs of the reproduction targets",
                       description="Write REPRODUCTION.md and its figures (reproduction/*.png) into --out from the "
                                   "runs of every `make reproduce-<name>` target under ROOT: per experiment the "
                                   "command, the scale that ran, the paper's table, figures and each claim's verdict "
                                   "by an explicit rule. Targets without runs are listed as not run.")
    p.add_argument("root", nargs="?", type=Path, default=Path("reproduction"),
                   help="folder of the reproduction targets' runs (default: reproduction)")
    p.add_argument("--out", type=Path, default=Path("docs"), help="folder of the document (default: docs)")
    p.add_argument("--scale", choices=["full", "reduced", "smoke"],
                   help="report this scale (default: per target the largest that holds runs)")
    p.set_defaults(func=cmd_reproduction)
    return parser


def _load(args):
    from .loading import load_runs

    include = tuple(args.include) if args.include else ("completed",)
    return load_runs(*args.dirs, include=include)


def cmd_report(args) -> int:
    from .report import build_report, check_out

    if args.out is not None:
        check_out(args.out)  # fail before loading
    df = _load(args)
    path = build_report(args.dirs, out=args.out, window=args.window, last_fraction=args.last_fraction,
                        rows=args.rows, cols=args.cols, max_curves=args.max_curves, df=df, ddof=args.ddof)
    print(f"report written to {path} and, as one self-contained file (copy it anywhere), {path.with_suffix('.html')}")
    return 0


def cmd_table(args) -> int:
    from .summaries import stat_names
    from .tables import pivot_table, summary_table

    df = _load(args)
    stats = args.stat or list(stat_names(args.metric, args.last_fraction))
    if bool(args.rows) != bool(args.cols):
        raise ValueError("--rows and --cols go together")
    if args.rows:
        tables = [pivot_table(df, args.rows, args.cols, stat=s, layer=args.layer, ddof=args.ddof) for s in stats]
    else:
        tables = [summary_table(df, stats=stats, metric=args.metric, layer=args.layer,
                                last_fraction=args.last_fraction, ddof=args.ddof)]
    render = {"md": lambda t: t.to_markdown(), "latex": lambda t: t.to_latex(), "csv": lambda t: t.to_csv()}
    print("\n".join(render[args.format](t) for t in tables), end="")
    return 0


def cmd_plot(args) -> int:
    from . import plots
    from .report import check_out, new_report_dir

    if args.out is not None:
        check_out(args.out)
    df = _load(args)
    if args.kind == "grid" and not (args.x and args.y):
        raise ValueError("--kind grid needs --x and --y")
    if args.kind == "vs" and not args.x:
        raise ValueError("--kind vs needs --x")
    out = new_report_dir(args.out)
    figures = []
    if args.kind == "curves":
        for m in args.metric or ["accuracy"]:
            figures.append((m, plots.plot_curves(df, m, window=args.window)))
    elif args.kind == "grid":
        figures.append((f"grid_{args.x}_{args.y}_{args.stat}", plots.plot_grid(df, args.x, args.y, stat=args.stat)))
    elif args.kind == "vs":
        figures.append((f"vs_{args.x}_{args.stat}", plots.plot_vs(df, args.x, stat=args.stat, log=not args.linear)))
    elif args.kind == "gradcov":
        figures.append(("grad_covariance", plots.plot_grad_covariance(df)))
    else:
        figures.append(("runtime", plots.plot_runtime(df)))
    for name, fig in figures:
        for path in plots.save_figure(fig, out / name.replace("/", "_")):
            print(path)
    return 0


def cmd_best(args) -> int:
    from .grid import best

    df = _load(args)
    b = best(df, by=args.by, keys=args.keys, ddof=args.ddof)
    if args.quiet:
        print(b.overrides)
        return 0
    cols = ["condition", "n_seeds", args.by, f"{args.by}_std"]
    print(b.ranking[cols].head(args.top).to_string(index=False))
    print()
    print(b)
    return 0


def cmd_status(args) -> int:
    from .status import render, sweep_status

    print("\n".join(render(sweep_status(*args.dirs, slurm=not args.no_slurm))))
    return 0


def cmd_reproduction(args) -> int:
    from .reproduction.document import build_document

    print(f"written {build_document(args.root, args.out, args.scale)}")
    return 0


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] not in SUBCOMMANDS and not argv[0].startswith("-"):
        argv.insert(0, "report")
    args = build_parser().parse_args(argv)
    import matplotlib

    matplotlib.use("Agg")
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(name)s: %(levelname)s: %(message)s")
    try:
        return args.func(args)
    except (NoRunsError, FileExistsError, KeyError, ValueError) as e:
        message = e.args[0] if isinstance(e, KeyError) and e.args else str(e)
        print(f"error: {message}", file=sys.stderr)
        return 2
