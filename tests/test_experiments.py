"""Experiments (tinyft/experiments.py): a sweep writes its tables, resumes without redoing finished runs,
refuses other settings, and its rows carry gain, forgetting, WiSE-FT points and a Pareto flag."""

import json
import os

import pytest
from conftest import quiet

from tinyft import experiments


def test_sweep_writes_its_tables_and_a_rerun_does_not_redo_finished_runs(source_run, tmp_path, monkeypatch):
    calls = []
    real = experiments.finetune

    def counting(*args, **kwargs):
        calls.append(args[2].strategy)
        return real(*args, **kwargs)

    monkeypatch.setattr(experiments, "finetune", counting)
    kwargs = dict(strategies=("full", "lora"), lrs=(3e-3,), mitigations=("none",), seeds=(0,), steps=3,
                  out=str(tmp_path), task=source_run["task"], batch_size=4, source_batches=2, source_batch_size=4,
                  log=quiet)
    first = experiments.run_sweep(source_run["path"], **kwargs)
    assert calls == ["full", "lora"]
    for name in ("runs.csv", "runs.json", "pareto.json"):
        assert os.path.exists(tmp_path / name)
    assert len((tmp_path / "runs.csv").read_text().splitlines()) == 3  # header + 2 runs

    second = experiments.run_sweep(source_run["path"], **kwargs)
    assert calls == ["full", "lora"]  # nothing redone
    assert second["runs"] == first["runs"]

    saved = json.loads((tmp_path / "runs.json").read_text())
    saved["runs"] = saved["runs"][:1]  # as if the sweep had stopped during the second run
    (tmp_path / "runs.json").write_text(json.dumps(saved))
    experiments.run_sweep(source_run["path"], **kwargs)
    assert calls == ["full", "lora", "lora"]  # only the missing run

    with pytest.raises(ValueError, match="other settings"):
        experiments.run_sweep(source_run["path"], **{**kwargs, "steps": 4})


def test_sweep_rows_carry_gain_forgetting_and_a_pareto_flag_with_seed_spread(source_run, tmp_path):
    result = experiments.run_sweep(source_run["path"], strategies=("full",), lrs=(3e-3,), mitigations=("replay", "ewc", "l2sp"),
                          seeds=(0, 1), steps=2, out=str(tmp_path), task=source_run["task"], batch_size=4,
                          source_batches=2, source_batch_size=4, fisher_batches=1, wise_alphas=(0.0, 0.5, 1.0),
                          log=quiet)
    assert len(result["runs"]) == 6
    for row in result["runs"]:
        assert row["forgetting"] == pytest.approx(row["source_after"] - row["source_before"])
        assert row["target_gain"] == pytest.approx(row["target_before"] - row["target_after"])
        assert row["wise_ft"][0]["forgetting"] == pytest.approx(0.0, abs=1e-6)  # alpha 0: the pretrained model
        assert row["wise_ft"][2]["source_loss"] == pytest.approx(row["source_after"], rel=1e-5)  # alpha 1
    assert all(s["n_seeds"] == 2 for s in result["summary"])
    pareto = json.loads((tmp_path / "pareto.json").read_text())
    assert any(p["pareto_optimal"] for p in pareto["points"])
    assert {p["label"] for p in pareto["points"]} >= {"full lr=0.003 ewc", "full lr=0.003 ewc wise_ft(0.5)"}


def test_sweep_refuses_an_unknown_mitigation_before_any_work():
    with pytest.raises(ValueError, match="unknown mitigation"):
        experiments.run_sweep(__file__, mitigations=("dropout",))
