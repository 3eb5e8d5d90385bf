"""Issue 32: the device acceptance check's CPU form (benchmarks/gpu_check.py --small) runs
here, so the script a GPU session runs as it is cannot rot while no GPU is lent. Its
timings are printed, never asserted; its checks (two deterministic runs identical, a
stopped run resumed to the uninterrupted weights, every slice completed) must hold."""
from __future__ import annotations

import importlib.util
import json
import sys

from tests.conftest import ROOT

spec = importlib.util.spec_from_file_location("gpu_check", ROOT / "benchmarks" / "gpu_check.py")
gpu_check = importlib.util.module_from_spec(spec)
sys.modules["gpu_check"] = gpu_check  # its dataclass looks its module up there
spec.loader.exec_module(gpu_check)


def test_the_cpu_form_runs_every_slice_and_its_checks_hold(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("DFKD_BENCH_CACHE", str(tmp_path / "user-zoo"))  # the check uses its own, and restores
    out = tmp_path / "check.json"
    assert gpu_check.main(["--small", "--device", "cpu", "--epochs", "1", "--out", str(out)]) == 0
    result = json.loads(out.read_text())
    slices = result["slices"]
    assert {s["method"] for s in slices} == {"fast-smoke", "ssdkd-smoke", "cmi-smoke", "deepinv-smoke", "dda-smoke"}
    assert {s["precision"] for s in slices} == set(gpu_check.precisions(gpu_check.resolve_device("cpu")))
    assert all(s["status"] == "completed" and s["kd_steps_per_s"] > 0 and s["distill_tflops"] > 0 for s in slices)
    checks = result["checks"]
    assert checks["deterministic_runs_identical"] and checks["resume"]["identical_to_uninterrupted"]
    assert checks["resume"]["stopped_after_epoch_1"] and checks["compile"]["on"]["compiled"] == "student"
    assert checks["compile"]["off"]["compiled"] == "off" and result["passed"] is True
    assert "| fast-smoke | fp32 |" in capsys.readouterr().out
    assert not (tmp_path / "user-zoo").exists()  # the throw-away teacher never reached the user's zoo


def test_precisions_are_the_native_ones(monkeypatch):
    cuda = gpu_check.torch.device("cuda")
    monkeypatch.setattr(gpu_check.torch.cuda, "get_device_capability", lambda device=None: (7, 0))
    assert gpu_check.precisions(cuda) == ["fp32", "fp16"]  # V100: no bf16 convolutions
    monkeypatch.setattr(gpu_check.torch.cuda, "get_device_capability", lambda device=None: (9, 0))
    assert gpu_check.precisions(cuda) == ["fp32", "bf16", "fp16"]
