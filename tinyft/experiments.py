"""Experiments: running many fine-tuning runs and reading them together, rather than teaching one idea.

Map of this file:
  1. Sweeps   run_sweep: fine-tune a checkpoint once per (strategy, lr, mitigation, seed), measure target
              gain and forgetting (forgetting.py) -> out/runs.json, runs.csv, pareto.json (atomic, resumable);
              run_key names a run; summarize_runs / summarize_wise (mean and spread over seeds),
              pareto_report (the Pareto front across groups), format_table (the printed table)
The measurements themselves (source_loss, forgetting, target_gain, pareto_front, ...) and the mitigations
(Replay, EWC, L2SP) live in forgetting.py; this file only runs them and writes the tables.
Lecture notes: docs/forgetting.md (the sweep), docs/index.md (where each file sits).
"""

import csv
import io
import json
import os
import time

import numpy as np

from . import checkpoint
from .checkpoint import atomic_write
from .finetune import STRATEGIES, FinetuneConfig, finetune, gpt_of
from .forgetting import (
    EWC,
    L2SP,
    MITIGATIONS,
    Replay,
    delta_effective_ranks,
    effective_state,
    fisher_diagonal,
    forgetting,
    learning_forgetting_curve,
    pareto_front,
    perplexity,
    source_data,
    source_loss,
    source_loss_callback,
    target_gain,
    total_weight_drift,
    wise_ft_sweep,
)
from .pretrain import fixed_batches

RUNS_JSON, RUNS_CSV, PARETO_JSON = "runs.json", "runs.csv", "pareto.json"
CSV_COLUMNS = ("strategy", "lr", "mitigation", "seed", "metric", "target_before", "target_after", "target_gain",
               "source_before", "source_after", "forgetting", "source_ppl_before", "source_ppl_after",
               "trainable_params", "weight_drift", "delta_erank", "wall_s")

# ====================================================================================================
# 1. Sweeps: strategies x learning rates x mitigations (x seeds), resumable
# ====================================================================================================


def run_key(strategy, lr, mitigation, seed):
    """The identity of one run in a sweep (a rerun skips keys already in runs.json)."""
    return f"{strategy}|lr={float(lr):g}|{mitigation}|seed={int(seed)}"


def run_sweep(base_checkpoint, strategies=("full", "lora"), lrs=(1e-3, 1e-4), mitigations=("none", "replay"),
              seeds=(0,), steps=100, out="runs/forgetting", *, task="code", batch_size=8, eval_every=None,
              replay_fraction=0.25, ewc_lambda=1e4, l2sp_alpha=0.3, source_batches=8, source_batch_size=8,
              fisher_batches=4, n_examples=1000, lora_rank=8, wise_alphas=(), progress=False, log=print):
    """Fine-tune the checkpoint once per (strategy, lr, mitigation, seed); measure target gain and forgetting.

    For each run: a fresh copy of the pretrained model -> finetune(...) with the mitigation's hooks and a
    source_loss_callback (the forgetting curve, every eval_every steps) -> source loss after, the weight
    drift and the mean effective rank of the block matrices' changes (forgetting.py, section 3) ->
    (optional) WiSE-FT at wise_alphas. Each finished run is appended to out/runs.json and out/runs.csv at
    once (atomic writes), so an interrupted sweep loses at most the run in progress; calling run_sweep again
    with the same settings skips every key (run_key) already there. out/pareto.json is rewritten after each
    run. task: a tasks.py name ("code" by default) or a Task object. Returns {"runs", "summary", "pareto", "out"}.
    """
    _check_sweep_arguments(base_checkpoint, strategies, lrs, mitigations, steps)
    eval_every = eval_every or max(1, steps // 4)
    os.makedirs(out, exist_ok=True)

    # --- once per sweep: the base model, the data, the measuring batches --------------------------------
    ckpt = checkpoint.load(base_checkpoint)
    tokenizer, source_train, source_val = source_data(ckpt)
    block_size = checkpoint.load_model(base_checkpoint).config.block_size
    the_task = _build_task(task, tokenizer, block_size, n_examples, seeds[0] if seeds else 0)
    task_name = task if isinstance(task, str) else getattr(task, "name", type(task).__name__)
    T = getattr(the_task, "block_size", None) or block_size
    settings = {"base_checkpoint": os.path.abspath(base_checkpoint), "task": task_name, "steps": int(steps),
                "batch_size": int(batch_size), "eval_every": int(eval_every), "replay_fraction": float(replay_fraction),
                "ewc_lambda": float(ewc_lambda), "l2sp_alpha": float(l2sp_alpha), "source_batches": int(source_batches),
                "source_batch_size": int(source_batch_size), "fisher_batches": int(fisher_batches),
                "n_examples": int(n_examples), "lora_rank": int(lora_rank),
                "wise_alphas": [float(a) for a in wise_alphas]}
    rows = _saved_rows(out, settings)
    done = {row["key"] for row in rows}
    measure = fixed_batches(source_val, source_batches, source_batch_size, T, seed=4321)  # held-out source text
    base_model = checkpoint.load_model(base_checkpoint)
    base = {"model": base_model, "state": base_model.state_dict(), "source_before": source_loss(base_model, measure),
            "source_train": source_train, "measure": measure, "T": T, "fisher": None}  # fisher: made at the first EWC run

    plan = [(s, float(lr), m, int(seed)) for s in strategies for lr in lrs for m in mitigations for seed in seeds]
    log(f"sweep: {len(plan)} runs ({sum(run_key(*p) in done for p in plan)} already done) of {steps} steps on "
        f"task {task_name!r}; source loss before {base['source_before']:.4f} nats/token")
    for i, (strategy, lr, mitigation, seed) in enumerate(plan):
        key = run_key(strategy, lr, mitigation, seed)
        if key in done:
            log(f"[{i + 1}/{len(plan)}] {key}: done before, skipped")
            continue
        t0 = time.perf_counter()
        model = checkpoint.load_model(base_checkpoint)  # a fresh pretrained copy
        hooks = _mitigation_hooks(mitigation, model, base, settings)
        config = FinetuneConfig(strategy=strategy, lr=lr, steps=steps, batch_size=batch_size, eval_every=eval_every,
                                warmup_steps=min(20, steps // 10), n_examples=n_examples, lora_rank=lora_rank,
                                lora_alpha=2 * lora_rank, seed=seed, out=None)
        result = finetune(model, the_task, config, mitigations=hooks,
                          callback=source_loss_callback(measure, every=eval_every), progress=progress,
                          log=lambda *a, **k: None)
        row = {"key": key, "strategy": strategy, "lr": lr, "mitigation": mitigation, "seed": seed,
               **_measure_run(result, base)}
        if wise_alphas:
            row["wise_ft"] = wise_ft_sweep(base["state"], gpt_of(result.model), the_task, measure, wise_alphas,
                                           source_before=base["source_before"], target_before=row["target_before"])
        row["wall_s"] = round(time.perf_counter() - t0, 2)
        rows.append(row)
        _write_runs(out, settings, rows)  # saved at once: a rerun skips it
        atomic_write(os.path.join(out, PARETO_JSON), json.dumps(pareto_report(rows), indent=1))
        log(f"[{i + 1}/{len(plan)}] {key}: target gain {row['target_gain']:+.4f} ({row['metric']}), "
            f"forgetting {row['forgetting']:+.4f} nats/token, {row['wall_s']:.0f} s")

    wanted = {run_key(*p) for p in plan}
    rows_now = [r for r in rows if r["key"] in wanted]
    pareto = pareto_report(rows_now)
    atomic_write(os.path.join(out, PARETO_JSON), json.dumps(pareto_report(rows), indent=1))
    return {"runs": rows_now, "summary": summarize_runs(rows_now), "pareto": pareto, "out": out}


def _check_sweep_arguments(base_checkpoint, strategies, lrs, mitigations, steps):
    """ValueError naming the first bad argument of run_sweep (before any work is done)."""
    for s in strategies:
        if s not in STRATEGIES:
            raise ValueError(f"unknown strategy {s!r}; valid strategies: {', '.join(STRATEGIES)}")
    for m in mitigations:
        if m not in MITIGATIONS:
            raise ValueError(f"unknown mitigation {m!r}; valid mitigations: {', '.join(MITIGATIONS)}")
    if not lrs or not all(float(lr) > 0 for lr in lrs):
        raise ValueError(f"lrs must be positive numbers, got {list(lrs)!r}")
    if steps < 1:
        raise ValueError(f"steps must be at least 1, got {steps}")
    if not os.path.exists(base_checkpoint):
        raise ValueError(f"no checkpoint at {base_checkpoint!r}; make one with `python -m tinyft pretrain` first")


def _build_task(task, tokenizer, block_size, n_examples, seed):
    if not isinstance(task, str):
        return task  # already a Task object (tests pass their own)
    from .tasks import build_task

    return build_task(task, tokenizer, block_size=block_size, n_examples=n_examples, seed=seed)


def _saved_rows(out, settings):
    """The runs already in out/runs.json (none if it is not there); a ValueError if they used other settings."""
    runs_path = os.path.join(out, RUNS_JSON)
    if not os.path.exists(runs_path):
        return []
    with open(runs_path, encoding="utf-8") as f:
        saved = json.load(f)
    changed = {k: (saved["settings"].get(k), v) for k, v in settings.items() if saved["settings"].get(k) != v}
    if changed:
        raise ValueError(f"{runs_path} holds runs made with other settings ({', '.join(f'{k}: {a!r} -> {b!r}' for k, (a, b) in changed.items())}); "
                         "use the same settings to resume, or a new --out")
    return saved["runs"]


def _mitigation_hooks(mitigation, model, base, settings):
    """The finetune() mitigations of one run: [] for "none", else [Replay | EWC | L2SP] built on `model`.

    EWC's Fisher is estimated once per sweep, on the pretrained model, at the first EWC run (base["fisher"]).
    """
    if mitigation == "replay":
        return [Replay(base["source_train"], settings["replay_fraction"])]
    if mitigation == "ewc":
        if base["fisher"] is None:
            batches = fixed_batches(base["source_train"], settings["fisher_batches"], settings["source_batch_size"],
                                    base["T"], seed=8765)
            base["fisher"] = fisher_diagonal(base["model"], batches)
        return [EWC(model, lam=settings["ewc_lambda"], fisher=base["fisher"])]
    if mitigation == "l2sp":
        return [L2SP(model, settings["l2sp_alpha"])]
    return []


def _measure_run(result, base):
    """One run's row: the target metric before/after and its gain, the source loss before/after and the
    forgetting, the weight drift, the mean effective rank of the changed block matrices, and the curve."""
    ft = result.model
    source_before, source_after = base["source_before"], source_loss(ft, base["measure"])
    metric, higher = result.metric, result.higher_is_better
    t_before, t_after = float(result.before["test"][metric]), float(result.after["test"][metric])
    post_state = effective_state(gpt_of(ft))
    pre_state = base["state"]
    blocks = [n for n in pre_state if ".h." in n and n.endswith(".weight") and np.ndim(pre_state[n]) == 2]
    ranks = delta_effective_ranks(pre_state, post_state, blocks)  # the matrices where LoRA can act
    moved = [r for r, _ in ranks.values() if r > 0]
    return {
        "metric": metric, "higher_is_better": higher, "target_before": t_before, "target_after": t_after,
        "target_gain": target_gain(t_before, t_after, higher),
        "source_before": source_before, "source_after": source_after,
        "forgetting": forgetting(source_before, source_after),
        "source_ppl_before": perplexity(source_before), "source_ppl_after": perplexity(source_after),
        "trainable_params": result.report.trainable_params,
        "weight_drift": total_weight_drift(pre_state, post_state, untied=getattr(gpt_of(ft), "head_untied", False)),
        "delta_erank": float(np.mean(moved)) if moved else 0.0,  # mean over changed block matrices
        "curve": learning_forgetting_curve(result.history, source_before, float(result.before["val"][metric]),
                                           metric, higher),
    }


def _write_runs(out, settings, rows):
    atomic_write(os.path.join(out, RUNS_JSON), json.dumps({"settings": settings, "runs": rows}, indent=1))
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=CSV_COLUMNS, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    atomic_write(os.path.join(out, RUNS_CSV), buffer.getvalue())


def summarize_runs(rows):
    """Mean and spread over seeds of each (strategy, lr, mitigation): target_gain and forgetting,
    with std the sample standard deviation (ddof = 1; 0 for a single seed). One dict per group."""
    groups = {}
    for row in rows:
        groups.setdefault((row["strategy"], row["lr"], row["mitigation"]), []).append(row)
    out = []
    for (strategy, lr, mitigation), runs in groups.items():
        item = {"label": f"{strategy} lr={lr:g} {mitigation}", "strategy": strategy, "lr": lr,
                "mitigation": mitigation, "n_seeds": len(runs), "trainable_params": runs[0]["trainable_params"]}
        for key in ("target_gain", "forgetting"):
            values = np.array([r[key] for r in runs], dtype=np.float64)
            item[f"{key}_mean"] = float(values.mean())
            item[f"{key}_std"] = float(values.std(ddof=1)) if len(values) > 1 else 0.0
        out.append(item)
    return out


def summarize_wise(rows):
    """WiSE-FT points (0 < alpha < 1) of each (strategy, lr, mitigation), means over seeds, shaped like
    summarize_runs' items (label "<group> wise_ft(alpha)", mitigation "wise_ft(alpha)")."""
    groups = {}
    for row in rows:
        for w in row.get("wise_ft") or []:
            if 0.0 < w["alpha"] < 1.0:
                key = (row["strategy"], row["lr"], row["mitigation"], w["alpha"])
                groups.setdefault(key, []).append((w["target_gain"], w["forgetting"], row["trainable_params"]))
    out = []
    for (strategy, lr, mitigation, alpha), values in groups.items():
        g, f = np.array([v[0] for v in values]), np.array([v[1] for v in values])
        out.append({"label": f"{strategy} lr={lr:g} {mitigation} wise_ft({alpha:g})", "strategy": strategy, "lr": lr,
                    "mitigation": f"{mitigation}+wise_ft({alpha:g})", "alpha": alpha, "n_seeds": len(values),
                    "trainable_params": values[0][2],
                    "target_gain_mean": float(g.mean()), "target_gain_std": float(g.std(ddof=1)) if len(g) > 1 else 0.0,
                    "forgetting_mean": float(f.mean()), "forgetting_std": float(f.std(ddof=1)) if len(f) > 1 else 0.0})
    return out


def pareto_report(rows):
    """pareto.json's content: one learning-versus-forgetting point per group (means over seeds) and per
    WiSE-FT interpolation (0 < alpha < 1) of a group, each flagged Pareto-optimal or not among them all,
    plus each run's curve along its fine-tuning."""
    summary = summarize_runs(rows) + summarize_wise(rows)
    flags = pareto_front(summary, "target_gain_mean", "forgetting_mean")
    points = [{**item, "pareto_optimal": flag} for item, flag in zip(summary, flags)]
    return {
        "sign_convention": "forgetting = source loss after - before (>0 forgot); target_gain > 0 = learned",
        "points": points,
        "pareto_optimal": [p["label"] for p in points if p["pareto_optimal"]],
        "curves": {r["key"]: r.get("curve", []) for r in rows},
    }


def format_table(summary, first="strategy  lr  mitigation"):
    """A readable table of a sweep: one line per (strategy, lr, mitigation), mean +- std over seeds."""
    lines = [f"{first:<38} {'seeds':>5} {'target gain':>18} {'forgetting':>18}  {'trainable':>10}"]
    for s in summary:
        lines.append(f"{s['label']:<38} {s['n_seeds']:>5} "
                     f"{s['target_gain_mean']:>+9.4f} ±{s['target_gain_std']:<7.4f} "
                     f"{s['forgetting_mean']:>+9.4f} ±{s['forgetting_std']:<7.4f}  {s['trainable_params']:>10,}")
    return "\n".join(lines)
