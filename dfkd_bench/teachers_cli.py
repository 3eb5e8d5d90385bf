"""``dfkd-bench teachers list|train|import|verify``: the shared teacher zoo from the
command line. Parses and validates, then calls ``dfkd_bench.teachers``."""
from __future__ import annotations

import dataclasses
from pathlib import Path

from rich.table import Table

from . import options
from .config import resolve_device
from .console import DataProgress, TeacherProgress, console, progress_bar
from .data import format_normalization, load_dataset, parse_normalization
from .errors import UserError
from .paths import cache_dir
from .precision import PRECISIONS
from .precision import resolve as resolve_precision
from .models.registry_helpers import model_options
from .registry import DATASETS, MODELS
from .tasks import TASKS, dataset_task
from .teachers import (TrainRecipe, default_import_normalization, import_teacher, list_teachers, teacher_metadata,
                       teacher_paths, train_teacher, training_state_path, verify)


def add_teachers_parser(subparsers) -> None:
    """Add ``teachers`` and its subcommands to the CLI's subparsers."""
    teachers = subparsers.add_parser("teachers", help="the shared teacher zoo: list, train, import, verify")
    sub = teachers.add_subparsers(dest="teachers_command", required=True, parser_class=type(teachers),
                                  metavar="{list,train,import,verify}")

    ls = sub.add_parser("list", help="teachers in the zoo with top-1, recipe, date and sha256")
    _cache_option(ls)
    ls.set_defaults(func=cmd_list)

    tr = sub.add_parser("train", help="train a teacher on the real training split and add it to the zoo")
    _teacher_options(tr)
    tr.add_argument("--epochs", type=int, default=None,
                    help="override the recipe's epochs (the schedule follows the shorter run)")
    tr.add_argument("--seed", type=int, default=0, help="initialisation and data-order seed (default 0)")
    tr.add_argument("--eval-every", type=int, default=1, metavar="N",
                    help="measure the test score (top-1, or mIoU) every N epochs (default 1; the last epoch always)")
    tr.add_argument("--precision", choices=[p for p in PRECISIONS if p != "fp16"], default="auto",
                    help="the forward passes' precision, as run.precision (default auto: bf16 where the device "
                         "runs it natively, else fp32); recorded in the teacher's metadata")
    tr.add_argument("--init-from", default=None, metavar="PATH",
                    help="start from this checkpoint's weights (same architecture; read weights-only) and run the "
                         "recipe's schedule again, a warm restart; its sha256 and metadata go into the teacher's")
    tr.add_argument("--pretrained-backbone", action="store_true",
                    help="start the backbone from its ImageNet weights, downloaded where the machine can (architectures "
                         "with the option: deeplabv3_r50, deeplabv3_mbv2); recorded in the teacher's metadata")
    _task_option(tr)
    tr.add_argument("--force", action="store_true", help="replace a teacher already in the zoo")
    tr.add_argument("--restart", action="store_true",
                    help="discard the state of an interrupted training of this teacher and start over (by default "
                         "a training killed part-way resumes from its last finished epoch, to the same weights on the CPU)")
    tr.set_defaults(func=cmd_train)

    im = sub.add_parser("import", help="add a checkpoint file (public layout or bare state dict) to the zoo")
    im.add_argument("path", metavar="PATH", help="checkpoint: a dict with 'state_dict', or a bare state dict")
    _teacher_options(im)
    im.add_argument("--force", action="store_true", help="replace a teacher already in the zoo")
    im.add_argument("--normalization", default=None, metavar="NORM",
                    help="the input normalisation the checkpoint was trained with, recorded and used by every run "
                         "with it: 'public' (the shared public checkpoints' values; default for cifar10/cifar100), "
                         "'dataset' (the data set's own statistics; default elsewhere) or 'M,M,M/S,S,S'")
    _task_option(im)
    im.set_defaults(func=cmd_import)

    ve = sub.add_parser("verify", help="check a teacher's sha256 and re-measure its test score (top-1, or mIoU)")
    _teacher_options(ve)
    ve.set_defaults(func=cmd_verify)


def _cache_option(p) -> None:
    p.add_argument("--cache-dir", default=None, help=options.CACHE_HELP)


def _teacher_options(p) -> None:
    p.add_argument("--dataset", required=True, help="data set, e.g. cifar10, cifar100, imagefolder:PATH")
    p.add_argument("--arch", required=True, help="architecture, e.g. resnet34, wrn40_2, resnet20")
    p.add_argument("--data-root", default=None, help=options.DATA_ROOT_HELP)
    p.add_argument("--download", action="store_true", help="let torchvision download a missing data set")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda (default auto)")
    _cache_option(p)


def _task_option(p) -> None:
    p.add_argument("--task", choices=sorted(TASKS), default=None,
                   help="a check only: the data set decides its task (shapes, nyuv2 and segfolder:PATH are "
                        "segmentation, the rest classification), and a --task that disagrees stops with exit code 2; "
                        "the score is the task's metric (top-1, or mIoU)")


def _check_names(args) -> None:
    DATASETS.get(args.dataset.split(":", 1)[0])
    if not args.arch.startswith("timm:"):
        MODELS.get(args.arch)
    task = getattr(args, "task", None)
    if task is not None and dataset_task(args.dataset) != task:
        actual = dataset_task(args.dataset)
        raise UserError(f"--task {task}: data set {args.dataset} is a {actual} set, and a data set decides its task; "
                        f"leave --task out or pass --task {actual}")


def _load_data(args):
    """The data set, with a bar while it is decoded for the first time."""
    with progress_bar() as bar:
        return load_dataset(args.dataset, args.data_root, args.download, cache=args.cache_dir,
                            progress=DataProgress(bar).data_progress)


def _device(args):
    return resolve_device(args.device)


def _refuse_existing(data_name: str, args, verb: str) -> None:
    meta = teacher_metadata(data_name, args.arch, args.cache_dir)
    ckpt, _ = teacher_paths(data_name, args.arch, args.cache_dir)
    if ckpt.exists() and not args.force:
        top1 = f", {meta.get('metric', 'top-1')} {meta['top1']:.2f}%" if meta and meta.get("top1") is not None else ""
        raise UserError(f"the zoo already has a {args.arch} teacher for {data_name} ({ckpt}{top1}); "
                        f"pass --force to {verb} a new one")


def recipe_summary(meta: dict) -> str:
    recipe = meta.get("recipe") or {}
    if recipe.get("imported"):
        return f"imported from {meta.get('source', '?')}"
    known = {f.name for f in dataclasses.fields(TrainRecipe)}
    try:
        return TrainRecipe(**{k: v for k, v in recipe.items() if k in known}).summary()
    except (TypeError, ValueError):
        return str(recipe)[:60]


def _short_source(source: str) -> str:
    """``ImageFolder at /a/b/cifar10-jpg`` -> ``ImageFolder cifar10-jpg``."""
    kind, _, where = source.partition(" at ")
    return f"{kind} {Path(where).name}".strip() if where else (source or "-")


def cmd_list(args) -> int:
    entries = list_teachers(args.cache_dir)
    where = cache_dir(args.cache_dir) / "teachers"
    if not entries:
        console.print(f"no teachers in {where}; add one with `dfkd-bench teachers train --dataset D --arch A` "
                      "or `dfkd-bench teachers import PATH --dataset D --arch A`")
        return 0
    table = Table(title=f"teacher zoo ({where})")
    # The score is the data set's main metric: top-1, or mIoU (named in the cell) for segmentation.
    for col in ("data set", "arch", "top-1 %", "recipe", "data", "normalisation", "date", "sha256"):
        table.add_column(col, justify="right" if col == "top-1 %" else "left")
    for e in entries:
        if "error" in e:
            table.add_row(e["dataset"], e["arch"], "-", f"[red]{e['error']}", "-", "-", "-", "-")
            continue
        top1 = e.get("top1")
        table.add_row(str(e.get("dataset")), str(e.get("arch")), "-" if top1 is None else f"{top1:.2f}" + (
                          f" ({e['metric']})" if e.get("metric", "top-1") != "top-1" else ""),
                      recipe_summary(e), _short_source(e.get("data_source", "")),
                      (e.get("normalization") or {}).get("name", "dataset (assumed)"),
                      str(e.get("date", "-"))[:16].replace("T", " "), str(e.get("sha256", ""))[:12] or "-")
    console.print(table)
    return 0


def cmd_train(args) -> int:
    _check_names(args)
    if args.epochs is not None and args.epochs < 1:
        raise UserError(f"--epochs {args.epochs}: expected a positive integer")
    if args.eval_every < 0:
        raise UserError(f"--eval-every {args.eval_every}: expected 0 (last epoch only) or a positive integer")
    init_from = Path(args.init_from).expanduser() if args.init_from else None
    if init_from is not None and not init_from.is_file():
        raise UserError(f"--init-from {init_from}: no such checkpoint file")
    options = {"pretrained_backbone": True} if args.pretrained_backbone else {}
    if options and "pretrained_backbone" not in model_options(args.arch):
        with_it = [m for m in MODELS.names() if "pretrained_backbone" in model_options(m)]
        raise UserError(f"--pretrained-backbone: architecture {args.arch} has no pretrained backbone to load; "
                        f"those that do: {', '.join(with_it)}")
    device = _device(args)
    data = _load_data(args)
    _refuse_existing(data.name, args, "train")
    recipe = TrainRecipe.for_dataset(data.name)
    if args.epochs is not None:
        recipe = dataclasses.replace(recipe, epochs=args.epochs)
    state = training_state_path(data.name, args.arch, args.cache_dir)
    if args.restart:
        state.unlink(missing_ok=True)
    console.print(f"training {args.arch} on {data.name} ({data.source or 'built in'}; "
                  f"{len(data.train_labels):,} images) on {device} in {resolve_precision(args.precision, device)[0]}: "
                  f"{recipe.summary()}{f'; from the weights of {init_from}' if init_from else ''}"
                  f"{'; backbone from its ImageNet weights' if options else ''}; "
                  f"state kept in {state}")
    with progress_bar() as bar:
        progress = TeacherProgress(bar, args.arch, recipe.epochs, state=str(state))
        _, meta = train_teacher(data, args.arch, device, recipe, args.cache_dir, args.seed, progress,
                                args.eval_every, precision=args.precision, init_from=init_from,
                                model_options=options)
    ckpt, _ = teacher_paths(data.name, args.arch, args.cache_dir)
    console.print(f"saved {args.arch} teacher for {data.name}: test {meta.get('metric', 'top-1')} {meta['top1']:.2f}% "
                  f"in {meta['train_seconds']:.0f} s -> {ckpt}")
    return 0


def cmd_import(args) -> int:
    _check_names(args)
    path = Path(args.path).expanduser()
    if not path.is_file():
        raise UserError(f"checkpoint {path} does not exist or is not a file")
    device = _device(args)
    data = _load_data(args)
    normalization = args.normalization or default_import_normalization(data)
    parse_normalization(normalization, data)  # a bad value stops before the zoo is touched
    _refuse_existing(data.name, args, "import")
    meta = import_teacher(path, args.dataset, args.arch, args.cache_dir, device=device, data=data,
                          normalization=normalization)
    ckpt, _ = teacher_paths(data.name, args.arch, args.cache_dir)
    norm = meta["normalization"]
    console.print(f"imported {path} as the {args.arch} teacher for {data.name}: test {meta.get('metric', 'top-1')} "
                  f"{meta['top1']:.2f}% "
                  f"under the {norm['name']} normalisation {format_normalization(norm['mean'], norm['std'])} "
                  f"(sha256 {meta['sha256'][:12]}) -> {ckpt}")
    return 0


def cmd_verify(args) -> int:
    _check_names(args)
    result = verify(args.dataset, args.arch, args.cache_dir, args.data_root, args.download, _device(args))
    recorded = "-" if result["recorded_top1"] is None else f"{result['recorded_top1']:.2f}%"
    text = (f"{result['arch']} teacher for {result['dataset']}: sha256 {result['sha256'][:12]} matches, "
            f"test {result['metric']} {result['measured_top1']:.2f}% (recorded {recorded}; "
            f"{result['note'] or result['precision']})")
    if result["ok"]:
        console.print(f"ok: {text}")
        return 0
    console.print(f"[red]mismatch[/red]: {text}; the data or the evaluation differs from when it was recorded")
    return 1
