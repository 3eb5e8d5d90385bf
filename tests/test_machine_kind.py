"""A run records the kind of machine it ran on (vendor, family, model and the ISA tier that
decides bf16's speed), resumes included, and its CPU seconds beside its wall seconds; a time
ratio across kinds, or over runs slowed by other work, says so: "AMD EPYC" alone names both
a Zen 4 with native bf16 and an AVX2-only EPYC where bf16 is emulated, and a run sharing its
core with another busy process takes twice the wall time for the same work."""
from __future__ import annotations

import json

import pandas as pd
import pytest
import torch

from dfkd_bench import claims, runs, store, timing
from dfkd_bench.report import write_report
from dfkd_bench.tables import environment_note
from tests.test_claims import GOOD, claims_file, study_tree


def cpuinfo(vendor, family, model, name, flags):
    block = (f"processor\t: {{i}}\nvendor_id\t: {vendor}\ncpu family\t: {family}\nmodel\t\t: {model}\n"
             f"model name\t: {name}\nflags\t\t: fpu sse2 {flags}\n")
    return "\n".join(block.format(i=i) for i in range(2))  # two processors, the first read


SAPPHIRE = cpuinfo("GenuineIntel", 6, 143, "Intel(R) Xeon(R) Platinum 8481C", "avx2 avx512f avx512_bf16 amx_bf16")
ZEN4 = cpuinfo("AuthenticAMD", 25, 17, "AMD EPYC", "avx2 avx512f avx512_bf16")
ROME = cpuinfo("AuthenticAMD", 23, 49, "AMD EPYC", "avx2")


def test_cpu_kind_tells_apart_cpus_with_one_model_name():
    assert store.cpu_kind(SAPPHIRE) == "GenuineIntel family 6 model 143, AMX-BF16"
    assert store.cpu_kind(ZEN4) == "AuthenticAMD family 25 model 17, AVX512-BF16"
    assert store.cpu_kind(ROME) == "AuthenticAMD family 23 model 49, AVX2"
    assert store.cpu_kind(cpuinfo("GenuineIntel", 6, 85, "Xeon", "avx2 avx512f")).endswith(", AVX512")
    assert store.cpu_kind(cpuinfo("GenuineIntel", 6, 15, "Core 2", "ssse3")).endswith(", below AVX2")
    assert store.cpu_kind("")  # no /proc/cpuinfo: the platform's name, never empty


def test_a_run_records_its_machine_kind():
    env = store.environment(torch.device("cpu"))
    assert env["cpu_kind"] == store.cpu_kind() and store.machine_kind(env) == (env["cpu_model"], env["cpu_kind"])
    h100 = store.machine_kind({"device": "cuda:0", "device_name": "NVIDIA H100", "cpu_kind": "x"})
    assert h100 == ("NVIDIA H100", "NVIDIA H100")
    old = store.machine_kind({"device": "cpu", "cpu_model": "AMD EPYC"})  # a record from before cpu_kind
    assert old == ("AMD EPYC", None)


def test_kinds_mix_where_recorded_kinds_or_names_differ_never_by_a_missing_kind():
    zen4, rome = ("AMD EPYC", "AuthenticAMD family 25 model 17, AVX512-BF16"), ("AMD EPYC", "AuthenticAMD family 23 "
                                                                                             "model 49, AVX2")
    assert store.mixed_kinds({zen4, ("AMD EPYC", None)}) == []  # an old record of the same name: not another kind
    assert store.mixed_kinds({zen4, rome}) == [rome[1], zen4[1]]
    assert store.mixed_kinds({("AMD EPYC", None), ("Intel Xeon", None)}) == ["AMD EPYC", "Intel Xeon"]
    assert store.mixed_kinds({zen4, ("NVIDIA H100", "NVIDIA H100")}) == ["AuthenticAMD family 25 model 17, AVX512-BF16",
                                                                         "NVIDIA H100"]
    assert store.mixed_kinds(set()) == []


def set_kind(run, kind, resumed_on=None):
    env = json.loads((run / "environment.json").read_text())
    (run / "environment.json").write_text(json.dumps({**env, "cpu_kind": kind}))
    if resumed_on:
        with open(run / "metrics.jsonl", "a") as fh:
            fh.write(json.dumps({"event": "resume", "epoch": 3, "environment": {**env, "cpu_kind": resumed_on}}) + "\n")


def test_a_resume_on_another_kind_counts_and_a_mixed_ratio_says_so(tmp_path):
    root = study_tree(tmp_path)
    every = sorted(p.parent for p in root.rglob("summary.json"))
    for run in every:
        set_kind(run, "AuthenticAMD family 25 model 17, AVX512-BF16")
    out = tmp_path / "same"
    write_report(root, out, claims=claims.load_claims(claims_file(tmp_path, GOOD)), figures=False,
                 compare=[("ssdkd", "fast-fast2")])
    same = {r["claim"]: r for r in pd.read_csv(out / "claims.csv").to_dict("records")}
    assert "times from" not in (out / "claims.md").read_text() + (out / "comparisons__cifar10.md").read_text()
    assert "CPU kind AuthenticAMD family 25 model 17, AVX512-BF16" in (out / "table__cifar10.md").read_text()

    ssdkd = next(r for r in every if "ssdkd" in r.name and "teacher" in str(r))
    set_kind(ssdkd, "AuthenticAMD family 25 model 17, AVX512-BF16", resumed_on="AuthenticAMD family 23 model 49, AVX2")
    assert runs.machine_kinds(ssdkd) == {("Test CPU", "AuthenticAMD family 25 model 17, AVX512-BF16"),
                                         ("Test CPU", "AuthenticAMD family 23 model 49, AVX2")}
    out = tmp_path / "mixed"
    write_report(root, out, claims=claims.load_claims(claims_file(tmp_path, GOOD)), figures=False,
                 compare=[("ssdkd", "fast-fast2")])
    mixed = {r["claim"]: r for r in pd.read_csv(out / "claims.csv").to_dict("records")}
    note = " (times from 2 machine kinds: AuthenticAMD family 23 model 49, AVX2; AuthenticAMD family 25 model 17, " \
           "AVX512-BF16)"
    assert mixed["Table 1"]["times_note"] == note
    assert mixed["Table 1"]["verdict"] == same["Table 1"]["verdict"] + "; caveat on its time ratio: " + note[2:-1]
    assert mixed["target"]["verdict"] == same["target"]["verdict"]  # no time rule: the verdict stands
    assert note in (out / "claims.md").read_text()
    assert "x (times from 2 machine kinds" in (out / "comparisons__cifar10.md").read_text()


def test_the_environment_line_names_cpu_kinds_and_warns_when_they_mix():
    one = {"device": "cpu", "device_name": "AMD EPYC", "cpu_kind": "AuthenticAMD family 25 model 17, AVX512-BF16"}
    line = environment_note([one, one])
    assert "CPU kind AuthenticAMD family 25 model 17, AVX512-BF16" in line and "machine kinds" not in line
    two = environment_note([one, {**one, "cpu_kind": "AuthenticAMD family 23 model 49, AVX2"}])
    assert two.endswith("(2 runs). Times from 2 machine kinds: compare times only within one.")


class FakeTime:
    """perf_counter and process_time that advance only when told: wall seconds, and the CPU
    seconds the process got of them."""
    def __init__(self, monkeypatch):
        self.wall = self.cpu = 0.0
        monkeypatch.setattr(timing.time, "perf_counter", lambda: self.wall)
        monkeypatch.setattr(timing.time, "process_time", lambda: self.cpu)

    def run(self, wall, share):
        self.wall += wall
        self.cpu += wall * share


def test_the_clock_keeps_cpu_seconds_per_phase_and_through_a_checkpoint(monkeypatch):
    t = FakeTime(monkeypatch)
    clock = timing.PhaseClock(torch.device("cpu"))
    with clock.phase("distillation"):
        t.run(4.0, 1.0)
        with clock.phase("synthesis"):  # nested: the outer phase pauses
            t.run(2.0, 0.5)
        t.run(1.0, 1.0)
    assert clock.seconds["distillation"] == 5.0 and clock.cpu_seconds["distillation"] == 5.0
    assert clock.seconds["synthesis"] == 2.0 and clock.cpu_seconds["synthesis"] == 1.0
    again = timing.PhaseClock(torch.device("cpu"))
    again.load_state_dict(clock.state_dict())
    assert again.cpu_seconds == clock.cpu_seconds and again.seconds == clock.seconds
    before = {p: 1.0 for p in timing.PHASES}  # a checkpoint from before CPU seconds were kept
    again.load_state_dict(before)
    assert again.seconds == before and again.cpu_seconds == clock.cpu_seconds
    assert timing.PhaseClock(torch.device("cuda")).cpu_seconds == {}  # the host's CPU time says nothing there


def epochs(run, shares, wall=10.0, first=0, with_cpu=True):
    """Epoch records whose train phases took ``wall`` seconds each at the given CPU shares."""
    records, total, cpu = [], wall * first, 0.0
    for i, share in enumerate(shares):
        total += wall
        cpu += wall * share
        record = {"event": "epoch", "epoch": first + i, "seconds_synthesis": total / 2, "seconds_distillation": total / 2,
                  "seconds_augmentation": 0.0}
        if with_cpu:
            record.update(cpu_seconds_synthesis=cpu / 2, cpu_seconds_distillation=cpu / 2, cpu_seconds_augmentation=0.0)
        records.append(record)
    with open(run / "metrics.jsonl", "a") as fh:
        fh.writelines(json.dumps(r) + "\n" for r in records)


def test_cpu_share_reads_cpu_over_wall_seconds_per_thread(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / "environment.json").write_text(json.dumps({"device": "cpu", "threads": 1}))
    epochs(run, [1.0, 0.5, 0.5, 1.0])
    assert runs.cpu_share(run) == pytest.approx(0.75)
    (run / "environment.json").write_text(json.dumps({"device": "cpu", "threads": 2}))
    assert runs.cpu_share(run) == pytest.approx(0.375)  # two threads, as much CPU: half of their cores' time
    old = tmp_path / "old"
    old.mkdir()
    epochs(old, [1.0, 1.0], with_cpu=False)
    assert runs.cpu_share(old) is None  # records from before CPU seconds were kept
    epochs(old, [0.5, 0.5], first=2)  # resumed under a version that keeps them: from the epoch after the first
    assert runs.cpu_share(old) == pytest.approx(0.5)


def test_a_time_ratio_over_runs_slowed_by_other_work_says_so(tmp_path):
    root = study_tree(tmp_path)  # its runs record two threads: a share of 1 is two CPU seconds a wall second
    for run in sorted(p.parent for p in root.rglob("summary.json")):
        epochs(run, [2.0, 1.96])
    out = tmp_path / "idle"
    write_report(root, out, claims=claims.load_claims(claims_file(tmp_path, GOOD)), figures=False)
    idle = {r["claim"]: r for r in pd.read_csv(out / "claims.csv").to_dict("records")}
    assert "runs slowed" not in (out / "claims.md").read_text()
    loaded = next(r for r in sorted(root.rglob("summary.json")) if "fast" in str(r)).parent
    (loaded / "metrics.jsonl").write_text("")
    epochs(loaded, [1.0, 1.04])
    out = tmp_path / "loaded"
    write_report(root, out, claims=claims.load_claims(claims_file(tmp_path, GOOD)), figures=False)
    rows = {r["claim"]: r for r in pd.read_csv(out / "claims.csv").to_dict("records")}
    note = "runs slowed by other work: their threads had 51%-99% of their cores' time"
    assert rows["Table 1"]["times_note"] == f" ({note})"
    # the same verdict with the caveat added (the loaded run's CPU seconds move only the CPU reading)
    first = idle["Table 1"]["verdict"].split("; the CPU-seconds")[0]
    assert rows["Table 1"]["verdict"].startswith(first)
    assert rows["Table 1"]["verdict"].endswith(f"; caveat on its time ratio: {note}")
    target = next(line for line in (out / "claims.md").read_text().splitlines() if line.startswith("| target |"))
    assert "slowed" not in target and pd.isna(rows["target"]["times_note"])  # S vs S': no Fast2 run in it


def test_cpu_train_seconds_are_cpu_seconds_per_thread_and_none_where_an_epoch_lacks_them(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / "environment.json").write_text(json.dumps({"device": "cpu", "threads": 1}))
    epochs(run, [1.0, 0.5, 0.5, 1.0])  # 10 wall seconds an epoch at these shares: 30 CPU seconds
    assert runs.cpu_train_seconds(run) == pytest.approx(30.0)
    (run / "environment.json").write_text(json.dumps({"device": "cpu", "threads": 2}))
    assert runs.cpu_train_seconds(run) == pytest.approx(15.0)
    old = tmp_path / "old"
    old.mkdir()
    epochs(old, [1.0, 1.0], with_cpu=False)
    epochs(old, [0.5, 0.5], first=2)  # resumed under a version that keeps them: its first epochs are unknown
    assert runs.cpu_train_seconds(old) is None


def test_a_cpu_seconds_ratio_reads_work_not_load_and_says_where_it_crosses_the_time_ratio(tmp_path):
    root = study_tree(tmp_path)  # recorded train seconds: Fast2 3,000 and SSD-KD 300 a run (0.10x)
    for run in sorted(p.parent for p in root.rglob("summary.json")):
        (run / "metrics.jsonl").write_text("")
        # two threads at full share: Fast2 20 CPU seconds a thread, SSD-KD 10 (0.50x, over Table 1's 0.35x)
        epochs(run, [2.0, 2.0], wall=10.0 if "fast" in run.name else 5.0)
    out = tmp_path / "all"
    write_report(root, out, claims=claims.load_claims(claims_file(tmp_path, GOOD)), figures=False)
    rows = {r["claim"]: r for r in pd.read_csv(out / "claims.csv").to_dict("records")}
    assert rows["Table 1"]["cpu_train_time_ratio"] == pytest.approx(0.5)
    assert rows["Table 1"]["train_time_ratio"] == pytest.approx(0.1)
    assert rows["Table 1"]["verdict"].endswith("; the CPU-seconds train time ratio, 0.50x, lies on the other side")
    table1 = next(line for line in (out / "claims.md").read_text().splitlines() if line.startswith("| Table 1 |"))
    assert "| 0.10x, 0.10x; 0.50x; CPU 0.50x |" in table1  # recorded; median-epoch; CPU seconds
    old = next(p.parent for p in sorted(root.rglob("summary.json")) if "fast" in str(p))
    (old / "metrics.jsonl").write_text("")
    epochs(old, [2.0, 2.0], with_cpu=False)  # one Fast2 run from before CPU seconds were kept
    out = tmp_path / "some"
    write_report(root, out, claims=claims.load_claims(claims_file(tmp_path, GOOD)), figures=False)
    table1 = next(line for line in (out / "claims.md").read_text().splitlines() if line.startswith("| Table 1 |"))
    assert "CPU 0.50x over 3/3 vs 2/3 runs" in table1
