"""Command line: parses, calls the planning API, the harness and the report, prints;
no logic of its own."""
from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

from rich.table import Table

from . import harness, options, plan, report, store, sweep
from .claims import load_claims
from .config import parse_set_options
from .console import DataProgress, RunDisplay, console, err_console, progress_bar
from .errors import RunLocked, Terminated, UserError
from .pairs import DEFAULT_DATASET
from .registry import DATASETS, METHODS, PAIRS, PLUGIN_ERRORS, discover_methods, load_plugin
from .signals import ignoring_sigint, sigterm_as_interrupt
from .summary import RunSummary
from .tasks import dataset_task, get_task
from .timing import TRAIN_PHASES


class ArgParser(argparse.ArgumentParser):
    def error(self, message: str):  # one line, exit code 2, no usage dump
        raise UserError(f"{message} (see {self.prog} --help)")


_csv, _seeds, _scales = options.items, options.seeds, options.scales


def _comparison(text: str) -> tuple[str, str]:
    names = options.items(text)
    if len(names) != 2 or names[0] == names[1]:
        raise UserError(f"--compare {text!r}: expected two different names A,B, e.g. ssdkd,fast2")
    return names[0], names[1]


def _margin(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not (math.isfinite(value) and value > 0):
        raise UserError(f"--margin {text!r}: expected a positive number of top-1 points, e.g. 2")
    return value


def _epochs(text: str) -> int:
    return options.positive_int(text, "--epochs")


def _workers(text: str) -> int:
    """``--workers``: a positive integer, or ``auto`` (``sweep.default_workers``)."""
    if text == "auto":
        return sweep.default_workers()
    try:
        return options.positive_int(text, "--workers")
    except UserError:
        raise UserError(f"--workers {text!r}: expected a positive integer or auto") from None


def build_specs(args) -> list[plan.RunSpec]:
    return plan.plan_runs(
        args.methods, dataset=args.dataset, pair=args.pair, preset=args.preset, seeds=args.seeds,
        epochs=args.epochs, data_scale=args.data_scale, device=args.device, sets=args.set or [], out=args.out,
        data_root=args.data_root, cache=args.cache_dir, download=args.download,
        train_missing_teacher=not args.no_train_teacher, force=args.force)


EXIT_FAILED, EXIT_LOCKED = 1, 3


def cmd_run(args) -> int:
    """Exit 0 when every run completed, 1 when one failed, 3 when none failed but one was
    skipped because another process was writing it."""
    specs = build_specs(args)
    for note in plan.data_scale_notes(specs, args.data_scale):
        err_console.print(f"dfkd-bench: warning: {note}", markup=False, highlight=False, soft_wrap=True)
    results, failed, locked = [], 0, 0
    with progress_bar() as bar:
        overall = bar.add_task("runs", total=len(specs), info="")
        for spec in specs:
            label = f"{spec.label} seed {spec.seed}"
            display = RunDisplay(bar, label, spec.run.epochs, get_task(dataset_task(spec.dataset)).metric)
            try:
                summary = harness.run(spec, display)
            except (UserError, KeyboardInterrupt):
                raise
            except RunLocked as exc:
                err_console.print(f"dfkd-bench: {exc}", markup=False, highlight=False, soft_wrap=True)
                display.stopped("skipped: another process is writing it")
                locked += 1
                bar.advance(overall)
                continue
            except Exception as exc:  # a broken method must not stop the others
                err_console.print(f"{label}: {type(exc).__name__}: {exc}", markup=False, highlight=False,
                                  soft_wrap=True)
                display.stopped(f"failed: {type(exc).__name__}")
                summary = harness.run_dir(spec).summary()  # the run recorded itself as failed
                if summary is None:
                    failed += 1
                    bar.advance(overall)
                    continue
            failed += not summary.completed
            results.append(summary)
            bar.advance(overall)
    print_run_table(results, pair_note=" (default pair: no --pair given)" if args.pair is None else "")
    return EXIT_FAILED if failed else EXIT_LOCKED if locked else 0


def print_run_table(results: list[RunSummary], pair_note: str = "") -> None:
    if not results:
        return
    for (dataset, pair), group in _group_by_setting(results).items():
        first = group[0]
        teacher = "-" if first.teacher_top1 is None else f"{first.teacher_top1:.2f}%"
        table = Table(title=f"{dataset}, {pair}{pair_note}: teacher {first.teacher} {first.metric} {teacher}")
        # The augmentation column only where a run of the table has the phase (DDA).
        aug = any(r.seconds.get("augmentation") for r in group)
        for col in ("method", "seed", "scale", "status", f"{first.metric} %", "best epoch %", "train s", "synth s",
                    *(("aug s",) if aug else ()), "distill s", "eval s", "train FLOPs"):
            table.add_column(col, justify="left" if col in ("method", "status") else "right")
        for r in group:
            fmt = lambda v, spec: "-" if v is None else format(v, spec)  # noqa: E731
            phases = [fmt(r.seconds.get(p), ".1f") for p in ("synthesis", *(("augmentation",) if aug else ()),
                                                                "distillation", "evaluation")]
            table.add_row(r.label, str(r.seed), str(r.data_scale or "-"),
                          r.status + (" (cached)" if r.skipped else ""), fmt(r.final_top1, ".2f"),
                          fmt(r.best_top1, ".2f"), fmt(r.train_seconds, ".1f"), *phases, fmt(r.training_flops, ".3g"))
        console.print(table)
    console.print("`dfkd-bench report --results DIR` builds the comparison tables over seeds. "
                  f"train s = {' + '.join(TRAIN_PHASES)} (evaluation and checkpoints are timed apart).")


def _group_by_setting(results: list[RunSummary]) -> dict[tuple[str, str], list[RunSummary]]:
    groups: dict[tuple[str, str], list[RunSummary]] = {}
    for r in results:
        groups.setdefault((r.dataset, r.pair), []).append(r)
    return groups


def cmd_list(args) -> int:
    table = Table(title="methods")
    for col in ("method", "mode", "presets", "summary"):
        table.add_column(col)
    for name, cls in METHODS.items():
        table.add_row(name, cls.mode, ", ".join(sorted(cls.presets)) or "-",
                      _first_paragraph(cls.__doc__ or sys.modules[cls.__module__].__doc__))
    console.print(table)
    pairs = Table(title="pairs")
    for col in ("pair", "teacher params", "student params", "note"):
        pairs.add_column(col)
    for name, pair in PAIRS.items():
        try:
            pairs.add_row(name, *(f"{n:,}" for n in pair.parameter_counts()), pair.note)
        except UserError as exc:  # an optional extra not installed (deeplabv3_mbv2 needs smp)
            pairs.add_row(name, "-", "-", f"{pair.note}; {exc}")
    console.print(pairs)
    data = Table(title="data sets")
    data.add_column("data set")
    data.add_column("about")
    for name, fn in DATASETS.items():
        data.add_row(name, _first_paragraph(fn.__doc__))
    console.print(data)
    return 0


def _first_paragraph(doc: str | None) -> str:
    return " ".join((doc or "").strip().split("\n\n")[0].split())


def cmd_report(args) -> int:
    results = Path(args.results)
    if results.exists() and not results.is_dir():
        raise UserError(f"--results {results} is a file, not a directory; pass the folder runs were written to "
                        "(run's --out, default results/)")
    if not results.is_dir():
        raise UserError(f"results directory {results} does not exist; run `dfkd-bench run` first or pass --results")
    out = Path(args.out)
    preamble = None
    if args.preamble is not None:
        try:
            preamble = Path(args.preamble).read_text()
        except (OSError, UnicodeDecodeError) as exc:
            raise UserError(f"--preamble {args.preamble} cannot be read ({getattr(exc, 'strerror', None) or exc}); "
                            "give a markdown file") from None
    try:
        rep = report.write_report(results, out, pairs=args.pair, datasets=args.dataset, methods=args.methods,
                                  baseline=args.baseline, preamble=preamble, figure_exclude=args.figure_exclude,
                                  compare=args.compare, margin=args.margin,
                                  claims=None if args.claims is None else load_claims(Path(args.claims)))
    except OSError as exc:
        raise UserError(f"cannot write the report to {out} ({exc.strerror or exc}); pass a writable --out") from None
    rows, problems, files = rep.rows, rep.problems, rep.files
    for r in rep.unfinished.itertuples(index=False) if not rep.unfinished.empty else []:
        err_console.print(f"dfkd-bench: note: {r.name} is {r.status} ({r.epochs_done}/{r.epochs} epochs): listed, "
                          "not averaged in", markup=False, highlight=False, soft_wrap=True)
    for where, why in problems:
        err_console.print(f"dfkd-bench: warning: skipped {where}: {why}", markup=False, highlight=False, soft_wrap=True)
    if not rows:
        kept = " matching the filters" if args.pair or args.dataset or args.methods else ""
        console.print(f"no completed runs{kept} under {results}: nothing written")
        return 0
    t = Table(title=f"comparison ({results})")
    for col in rows[0]:
        t.add_column(col, justify="left" if col in ("data set", "pair", "method") else "right")
    for r in rows:
        t.add_row(*r.values())
    console.print(t)
    for line in rep.notes:
        console.print(line, markup=False, highlight=False, soft_wrap=True)
    console.print(f"written: {out / 'index.md'} and {len(files) - 1} more files under {out}")
    return 0


def build_grid(args) -> "sweep.Grid":
    """The grid file, with any grid flag given on the command line over it."""
    if args.grid is None and not args.methods:
        raise UserError("sweep needs a grid file or --methods (see dfkd-bench sweep --help)")
    grid = sweep.load_grid(args.grid) if args.grid else sweep.Grid(methods=args.methods)
    for attr, value in (("methods", args.methods), ("datasets", args.dataset), ("pairs", args.pair),
                        ("seeds", args.seeds), ("data_scales", args.data_scale), ("epochs", args.epochs),
                        ("device", args.device), ("preset", args.preset), ("out", args.out),
                        ("data_root", args.data_root), ("cache", args.cache_dir)):
        if value is not None:
            setattr(grid, attr, value)
    if args.set:
        grid.sets = {**grid.sets, **parse_set_options(args.set)}
    return grid


def cmd_sweep(args) -> int:
    """Exit 0 when every cell completed; 1 when a cell failed, was interrupted (its
    worker died) or is left failed without ``--retry-failed``; 3 when none of those but
    a cell was left locked by another process (re-run the sweep later). ``--status``
    exits 0."""
    grid = build_grid(args)
    specs = sweep.expand(grid, force=args.force)
    here = sweep.runs_here(specs, args.executor)
    statuses = [sweep.cell_status(s, here) for s in specs]
    if args.status:
        print_sweep_status(statuses)
        return 0
    sweep.check_target(grid, specs, args.executor)
    todo = [c.spec for c in statuses] if args.force else sweep.to_run(statuses, args.retry_failed)
    failed_left = [c for c in statuses if c.status == sweep.FAILED and not args.retry_failed and not args.force]
    left = f", {len(failed_left)} failed and left as they are (--retry-failed runs them)" if failed_left else ""
    console.print(f"sweep: {len(specs)} cells, {sum(c.status == sweep.DONE for c in statuses)} already done{left}, "
                  f"{len(todo)} to run ({args.executor} executor)")
    if not todo:
        print_sweep_status(statuses)
        return _sweep_exit(statuses, {})
    store.check_locks(Path(grid.out))
    with progress_bar() as bar:  # a missing teacher trains here first, its epochs shown
        shown = DataProgress(bar)
        sweep.prepare_teachers(todo, train_missing=args.executor != "slurm", announce=shown.message,
                               progress_for=shown.teacher_progress)
    if args.executor in ("slurm", "submitit-local"):
        folder = Path(grid.out) / "sweep-logs"
        jobs = sweep.submit(todo, grid, folder, cluster="local" if args.executor == "submitit-local" else "slurm",
                            plugins=args.plugin)
        console.print(f"submitted {len(jobs)} jobs (array {jobs[0].job_id.split('_')[0]}); logs in {folder}; "
                      "`dfkd-bench sweep ... --status` shows progress")
        if args.executor == "slurm" and not args.wait:
            return 0
        outcome = {i: _job_result(job) for i, job in enumerate(jobs)}
    else:
        with progress_bar() as bar:
            task = bar.add_task("cells", total=len(todo), info="")

            def advance(i: int, status: str) -> None:
                bar.advance(task)
                bar.update(task, info=f"{todo[i].label} seed {todo[i].seed}: {status}")

            outcome = sweep.run_local(todo, args.workers, advance, plugins=args.plugin)
    final = [sweep.cell_status(s, here) for s in specs]
    print_sweep_status(final, dead=sweep.dead_workers(outcome))
    reasons = {id(spec): outcome[i] for i, spec in enumerate(todo) if i in outcome}
    return _sweep_exit(final, reasons)


def _job_result(job) -> str:
    """A submitit job's final status, or what became of a job that returned none (its
    cell's own state is read from the run store)."""
    try:
        return job.result()
    except Exception as exc:  # noqa: BLE001  (the run's own summary says the rest)
        # submitit's first line says what became of the job; the rest is its log
        first = str(exc).strip().splitlines()[0][:160] if str(exc).strip() else ""
        return f"job {getattr(job, 'job_id', '?')} ended without a result ({type(exc).__name__}" + \
            (f": {first})" if first else ")")


def _sweep_exit(statuses: list["sweep.CellStatus"], reasons: dict[int, str]) -> int:
    """One line per cell that did not complete, saying why; the exit code of cmd_sweep."""
    unfinished = [c for c in statuses if c.status != sweep.DONE]
    for c in unfinished:
        why = (reasons.get(id(c.spec)) or c.reason or c.status).removeprefix(f"{c.status}: ")
        hint = {sweep.FAILED: "; --retry-failed runs it again", sweep.INTERRUPTED: "; re-run the sweep to resume it",
                sweep.PENDING: "; re-run the sweep to start it"}.get(c.status, "")
        err_console.print(f"dfkd-bench: {c.spec.dataset} {c.spec.pair} {c.spec.label} seed {c.spec.seed} "
                          f"(scale {c.spec.run.data_scale or '-'}): {c.status}: {why}{hint}",
                          markup=False, highlight=False, soft_wrap=True)
    if any(c.status in (sweep.FAILED, sweep.INTERRUPTED, sweep.PENDING) for c in unfinished):
        return EXIT_FAILED
    return EXIT_LOCKED if unfinished else 0


def print_sweep_status(statuses: list["sweep.CellStatus"], dead: list[str] = ()) -> None:
    table = Table(title="sweep cells")
    for col in ("data set", "pair", "method", "scale", "seed", "status", "epochs", "ran as", "reason"):
        table.add_column(col, justify="right" if col in ("scale", "seed", "epochs") else "left")
    for c in statuses:
        s = c.spec
        table.add_row(s.dataset, s.pair, s.label, str(s.run.data_scale or "-"), str(s.seed), c.status,
                      f"{c.epochs_done}/{s.run.epochs}", c.ran_as or "-", (c.reason or "")[:80])
    console.print(table)
    counts = {k: sum(c.status == k for c in statuses) for k in
              (sweep.DONE, sweep.RUNNING, sweep.INTERRUPTED, sweep.FAILED, sweep.PENDING)}
    console.print("cells: " + ", ".join(f"{v} {k}" for k, v in counts.items()) +
                  (f"; {len(dead)} worker{'s' if len(dead) > 1 else ''} died: {'; '.join(dead)}" if dead else ""))


def make_parser() -> argparse.ArgumentParser:
    p = ArgParser(prog="dfkd-bench", description="Benchmark data-free knowledge distillation methods.")
    p.add_argument("--plugin", action="append", default=[], metavar="MODULE",
                   help="import MODULE, which registers extra methods (repeatable)")
    sub = p.add_subparsers(dest="command", required=True, parser_class=ArgParser)

    r = sub.add_parser("run", help="distil with one or more methods")
    r.add_argument("--methods", type=_csv, required=True,
                   help="comma-separated methods, presets or method:preset, e.g. deepinv,kd,fast:fast10-cpu")
    r.add_argument("--pair", default=None, help="TEACHER-STUDENT (default: the data set's default pair)")
    r.add_argument("--dataset", default=DEFAULT_DATASET, help=f"data set (default: {DEFAULT_DATASET}, embedded)")
    r.add_argument("--preset", default=None, help="named preset of every method, or a YAML file of changes")
    r.add_argument("--seeds", type=_seeds, default=[0], help="comma-separated seeds (default 0)")
    r.add_argument("--data-scale", type=_scales, default=None, metavar="N[,N...]",
                   help="samples the student trains on per epoch; several (500,2500,5000) make a data-scale grid: "
                        "one run per method, scale and seed")
    r.add_argument("--epochs", type=_epochs, default=None, metavar="N",
                   help="epochs of every run, warm-up epochs included (default: each preset's)")
    r.add_argument("--device", type=options.device, default=None, help="auto | cpu | cuda (default auto)")
    r.add_argument("--out", default="results", help="results directory (default results/)")
    r.add_argument("--set", action="append", metavar="KEY=VALUE", help="override a config field (repeatable)")
    r.add_argument("--force", action="store_true", help="redo runs that already completed")
    r.add_argument("--data-root", default=None, metavar="DIR", help=options.DATA_ROOT_HELP)
    r.add_argument("--download", action="store_true", help="let torchvision download missing data sets")
    r.add_argument("--cache-dir", default=None, metavar="DIR", help=options.CACHE_HELP)
    r.add_argument("--no-train-teacher", action="store_true",
                   help="stop with the command to run instead of training a missing teacher")
    r.set_defaults(func=cmd_run)

    ls = sub.add_parser("list", help="methods with presets, pairs, data sets")
    ls.set_defaults(func=cmd_list)

    rep = sub.add_parser("report", help="tables, figures and an index from a results directory",
                         description="Tables (markdown, CSV, LaTeX) and figures (PNG, PDF) from the run store of a "
                                     "results tree (summaries, metrics records, diagnostics; never logs), with an "
                                     "index.md that embeds them: one row per experiment, mean ± std over its seeds.")
    rep.add_argument("--results", default="results", help="results tree to read (default results/)")
    rep.add_argument("--out", default="reports", help="folder the report is written to (default reports/)")
    rep.add_argument("--pair", type=_csv, default=None, help="only these pairs (comma-separated)")
    rep.add_argument("--dataset", type=_csv, default=None, help="only these data sets (comma-separated)")
    rep.add_argument("--methods", type=_csv, default=None,
                     help="only these methods: names, labels (fast-fast2-cpu) or presets, comma-separated")
    rep.add_argument("--baseline", default=None, metavar="METHOD",
                     help="add a speed-up table against this method label (e.g. fast-fast2-cpu)")
    rep.add_argument("--preamble", default=None, metavar="FILE",
                     help="a markdown file put at the top of index.md (a study's command, findings); the "
                          "generated report follows it under its own heading")
    rep.add_argument("--figure-exclude", type=_csv, default=None, metavar="METHODS",
                     help="methods, labels or presets (comma-separated) kept in every table but left out of the "
                          "accuracy-vs-cost and learning-curve figures, e.g. a study's ablations")
    rep.add_argument("--compare", type=_comparison, action="append", default=[], metavar="A,B",
                     help="a statistical comparison of A against B on every pair where both ran (names, labels or "
                          "presets): Welch's t, the difference's 95%% interval, TOST within --margin, the seeds "
                          "needed, time ratios (repeatable)")
    rep.add_argument("--margin", type=_margin, default=2.0, metavar="POINTS",
                     help="the equivalence margin of --compare's TOST, in top-1 points (default 2)")
    rep.add_argument("--claims", default=None, metavar="FILE",
                     help="a YAML file (a study's grid, or a file of its own) whose claims: section names arms and "
                          "tests (rule higher, differ or non-inferior; metric top1, pool_entropy, pool_confidence or "
                          "pool_phi): each claim's verdict, computed by dfkd_bench.stats, goes to claims.md at the top "
                          "of the report")
    rep.set_defaults(func=cmd_report)
    sw = sub.add_parser("sweep", help="a grid of runs on local workers or on Slurm (submitit), resumable",
                        description="Run every cell of a grid (methods x data sets x pairs x data scales x seeds): "
                                    "completed cells are skipped, interrupted ones resume, failed ones wait for "
                                    "--retry-failed. Flags given override the grid file's keys.")
    sw.add_argument("grid", nargs="?", default=None, help="grid file (YAML); see the README's 'Running a grid'")
    sw.add_argument("--methods", type=_csv, default=None, help="comma-separated methods or method:preset")
    sw.add_argument("--dataset", type=_csv, default=None, help="comma-separated data sets")
    sw.add_argument("--pair", type=_csv, default=None, help="comma-separated pairs")
    sw.add_argument("--seeds", type=_seeds, default=None, help="comma-separated seeds")
    sw.add_argument("--data-scale", type=_scales, default=None, metavar="N[,N...]", help="data scales of the grid")
    sw.add_argument("--epochs", type=_epochs, default=None, metavar="N",
                    help="epochs of every cell, warm-up epochs included (default: the grid's, else each preset's)")
    sw.add_argument("--device", type=options.device, default=None,
                    help="auto | cpu | cuda: the device of the machines that run the cells (resolved there)")
    sw.add_argument("--preset", default=None, help="named preset of every method")
    sw.add_argument("--set", action="append", metavar="KEY=VALUE", help="override a config field (repeatable)")
    sw.add_argument("--out", default=None, help="results directory (default: the grid's, else results/)")
    sw.add_argument("--data-root", default=None, metavar="DIR",
                    help=f"{options.DATA_ROOT_WHAT}, as the machines that run the cells see it (default: the "
                         f"grid's, else {options.DATA_ROOT_DEFAULT})")
    sw.add_argument("--cache-dir", default=None, metavar="DIR",
                    help=f"{options.CACHE_WHAT}, as the machines that run the cells see it (default: the grid's, "
                         f"else {options.CACHE_DEFAULT})")
    sw.add_argument("--executor", choices=("local", "slurm", "submitit-local"), default="local",
                    help="local worker processes (default), Slurm job arrays through submitit, or submitit's "
                         "local executor (the Slurm path on this machine)")
    sw.add_argument("--workers", type=_workers, default="auto",
                    help="local worker processes, or auto (default): one per GPU, else one per CPU core (as "
                         "memory allows), each with cores/N CPU threads or one GPU")
    sw.add_argument("--status", action="store_true", help="print each cell's state and start nothing")
    sw.add_argument("--retry-failed", action="store_true", help="run failed cells again")
    sw.add_argument("--wait", action="store_true", help="slurm: wait for the jobs and print the final status")
    sw.add_argument("--force", action="store_true", help="redo completed cells")
    sw.set_defaults(func=cmd_sweep)
    from .teachers_cli import add_teachers_parser
    add_teachers_parser(sub)
    return p


def main(argv: list[str] | None = None) -> int:
    try:
        with sigterm_as_interrupt():
            parser = make_parser()
            args = parser.parse_args(argv)
            discover_methods()
            for line in PLUGIN_ERRORS:
                err_console.print(f"dfkd-bench: warning: {line}", markup=False, highlight=False, soft_wrap=True)
            for module in args.plugin:
                load_plugin(module)
            return args.func(args)
    except UserError as exc:
        err_console.print(f"dfkd-bench: error: {exc}", markup=False, highlight=False, soft_wrap=True)
        return 2
    except KeyboardInterrupt as exc:
        with ignoring_sigint():  # a second Ctrl-C must not turn exit code 130 into a traceback
            err_console.print("dfkd-bench: interrupted; re-run the same command to resume", markup=False)
            return 143 if isinstance(exc, Terminated) else 130


if __name__ == "__main__":
    sys.exit(main())
