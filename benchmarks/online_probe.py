"""Why an online adversarial run (DFAD, ZSKT) ends where it does: from a run directory's
last checkpoint, the student's predictions on the real test set (top-1 and the share of
its most frequent class) and, on fresh batches of the run's final generator, the share of
the teacher's and the student's most frequent class, the normalised entropy of the
teacher's class histogram and the mean L1 distance of the two models' logits.

    python benchmarks/online_probe.py RUNDIR [RUNDIR...] --data-root ../shared/data/cifar10-jpg \
        --cache-dir CACHE [--batches 8]

Generator batches are drawn in train mode at the run's batch size (their BN statistics
are per batch, as in training); the student is read in eval mode, as it is tested.
"""
from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

import torch
import torch.nn.functional as F

from dfkd_bench import store
from dfkd_bench.data import load_dataset
from dfkd_bench.models import build_model
from dfkd_bench.models.generator import GENERATORS
from dfkd_bench.teachers import load_teacher, teacher_metadata, teacher_normalizer


def top_share(pred: torch.Tensor, classes: int) -> float:
    """The share of the most frequent class among predicted labels."""
    return float(torch.bincount(pred, minlength=classes).max() / len(pred))


def class_entropy(pred: torch.Tensor, classes: int) -> float:
    """Entropy of a class histogram over log C: 1 for a balanced one, 0 for one class."""
    p = torch.bincount(pred, minlength=classes).float() / len(pred)
    return float(-(p[p > 0] * p[p > 0].log()).sum() / math.log(classes))


@torch.no_grad()
def probe(rundir: Path, data, cache: str, batches: int) -> dict[str, float]:
    cfg = json.loads((rundir / "config.json").read_text())
    ckpt = store.RunDir(rundir.parent, rundir.name).load_checkpoint()
    c = data.image_shape[0]
    teacher = load_teacher(data, cfg["teacher"], c, root=cache).eval()
    student = build_model(cfg["student"], data.num_classes, c)
    student.load_state_dict(ckpt["trainer"]["student"])
    student.eval()
    norm = teacher_normalizer(teacher_metadata(data.name, cfg["teacher"], cache), data)
    pred = torch.cat([student(norm.from_uint8(x)).argmax(1) for x in data.test_images.split(500)])
    out = {"test_top1": float((pred == data.test_labels).float().mean() * 100),
           "test_student_top_class": top_share(pred, data.num_classes)}
    mc = cfg["method_config"]
    gen = GENERATORS[mc.get("generator", "sigmoid")](nz=mc["nz"], img_size=data.image_shape[1], nc=c)
    gen.load_state_dict(ckpt["method"]["generator"])
    gen.train()
    t_pred, s_pred, l1 = [], [], []
    for _ in range(batches):
        x = gen(torch.randn(cfg["run"]["batch_size"], mc["nz"]))
        x = x if gen.normalized_output else norm(x)
        t, s = teacher(x), student(x)
        t_pred.append(t.argmax(1))
        s_pred.append(s.argmax(1))
        l1.append(F.l1_loss(s, t))
    t_pred, s_pred = torch.cat(t_pred), torch.cat(s_pred)
    out.update({"gen_teacher_top_class": top_share(t_pred, data.num_classes),
                "gen_student_top_class": top_share(s_pred, data.num_classes),
                "gen_teacher_class_entropy": class_entropy(t_pred, data.num_classes),
                "gen_agreement": float((t_pred == s_pred).float().mean()),
                "gen_l1": float(torch.stack(l1).mean())})
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("rundirs", nargs="+", type=Path)
    ap.add_argument("--data-root", required=True)
    ap.add_argument("--cache-dir", required=True)
    ap.add_argument("--batches", type=int, default=8)
    args = ap.parse_args()
    torch.manual_seed(0)
    data = None
    for rundir in args.rundirs:
        dataset = json.loads((rundir / "config.json").read_text())["dataset"]
        data = data or load_dataset(dataset, root=args.data_root, cache=args.cache_dir)
        result = probe(rundir, data, args.cache_dir, args.batches)
        print(rundir.name, " ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in result.items()))


if __name__ == "__main__":
    main()
