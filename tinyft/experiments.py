"""Experiments: running many fine-tuning runs and reading them together, rather than teaching one idea.

Map of this file:
  1. Sweeps   run_sweep: fine-tune a checkpoint once per (strategy, lr, mitigation, seed), measure target
              gain and forgetting (forgetting.py) -> out/runs.json, runs.csv, pareto.json (atomic, resumable);
              run_key names a run; summarize_runs / summarize_wise (mean and spread over seeds),
              pareto_report (the Pareto front across groups), format_table (the printed table); a run
              that diverges is recorded with "diverged": true and its numbers null (json_safe)
  2. Seeds and intervals: t_quantile (Student's t, no SciPy), mean_ci, paired_difference, verdict,
              over_seeds, format_estimate. Every conclusion tinyft prints comes from `verdict`.
  3. Choosing on validation: choose_on_validation picks a setting by its validation score alone; the test
              score of the one chosen is what gets reported (the test split is never looked at while choosing).
The measurements themselves (source_loss, forgetting, target_gain, pareto_front, ...) and the mitigations
(Replay, EWC, L2SP) live in forgetting.py; this file only runs them and writes the tables.
Lecture notes: docs/forgetting.md (the sweep), docs/index.md (where each file sits).
"""

import csv
import io
import json
import math
import os
import time

import numpy as np

from . import checkpoint
from .checkpoint import atomic_write
from .finetune import STRATEGIES, FinetuneConfig, finetune, gpt_of
from .optim import DivergenceError
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
CSV_COLUMNS = ("strategy", "lr", "mitigation", "seed", "diverged", "metric", "target_before", "target_after",
               "target_gain", "source_before", "source_after", "forgetting", "source_ppl_before", "source_ppl_after",
               "trainable_params", "weight_drift", "delta_erank", "wall_s")
SWEEP_FILES = (RUNS_JSON, RUNS_CSV, PARETO_JSON)

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

    Every argument and `out` are checked before any work (nothing is created when one is wrong). A run whose
    loss or gradient norm turns NaN or inf is recorded as diverged ("diverged": true, the step and the last
    finite loss; its measurements null, since JSON has no NaN) and the sweep goes on; a rerun skips it like
    any finished run. Ctrl-C stops the sweep (KeyboardInterrupt) without recording the run in progress.
    """
    _check_sweep_arguments(base_checkpoint, strategies, lrs, mitigations, steps, out, seeds=seeds,
                           batch_size=batch_size, replay_fraction=replay_fraction, ewc_lambda=ewc_lambda,
                           l2sp_alpha=l2sp_alpha, wise_alphas=wise_alphas)
    eval_every = eval_every or max(1, steps // 4)

    task_name = task if isinstance(task, str) else getattr(task, "name", type(task).__name__)
    settings = {"base_checkpoint": os.path.abspath(base_checkpoint), "task": task_name, "steps": int(steps),
                "batch_size": int(batch_size), "eval_every": int(eval_every), "replay_fraction": float(replay_fraction),
                "ewc_lambda": float(ewc_lambda), "l2sp_alpha": float(l2sp_alpha), "source_batches": int(source_batches),
                "source_batch_size": int(source_batch_size), "fisher_batches": int(fisher_batches),
                "n_examples": int(n_examples), "lora_rank": int(lora_rank),
                "wise_alphas": [float(a) for a in wise_alphas]}
    rows = _saved_rows(out, settings)  # a runs.json of other settings is refused before anything is loaded

    # --- once per sweep: the base model, the data, the measuring batches --------------------------------
    ckpt = checkpoint.load(base_checkpoint)
    tokenizer, source_train, source_val = source_data(ckpt)
    block_size = checkpoint.load_model(base_checkpoint).config.block_size
    the_task = _build_task(task, tokenizer, block_size, n_examples, seeds[0] if seeds else 0)
    T = getattr(the_task, "block_size", None) or block_size
    done = {row["key"] for row in rows}
    measure = fixed_batches(source_val, source_batches, source_batch_size, T, seed=4321)  # held-out source text
    base_model = checkpoint.load_model(base_checkpoint)
    base = {"model": base_model, "state": base_model.state_dict(), "source_before": source_loss(base_model, measure),
            "source_train": source_train, "measure": measure, "T": T, "fisher": None}  # fisher: made at the first EWC run

    plan = [(s, float(lr), m, int(seed)) for s in strategies for lr in lrs for m in mitigations for seed in seeds]
    os.makedirs(out, exist_ok=True)  # every check passed
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
        row = {"key": key, "strategy": strategy, "lr": lr, "mitigation": mitigation, "seed": seed}
        try:
            result = finetune(model, the_task, config, mitigations=hooks,
                              callback=source_loss_callback(measure, every=eval_every), progress=progress,
                              log=lambda *a, **k: None)
        except DivergenceError as err:  # recorded as diverged; the sweep goes on
            row.update(_diverged_row(err, the_task, base))
        else:
            if result.interrupted:  # Ctrl-C: the run in progress is not recorded; a rerun redoes it
                log(f"[{i + 1}/{len(plan)}] {key}: interrupted; {len(rows)} finished runs are in {out} (rerun to go on)")
                raise KeyboardInterrupt
            row.update(diverged=False, **_measure_run(result, base))
            if wise_alphas:
                row["wise_ft"] = wise_ft_sweep(base["state"], gpt_of(result.model), the_task, measure, wise_alphas,
                                               source_before=base["source_before"], target_before=row["target_before"])
        row["wall_s"] = round(time.perf_counter() - t0, 2)
        row = json_safe(row)  # as runs.json holds it (inf / NaN -> None), so a rerun reads back the same row
        rows.append(row)
        _write_runs(out, settings, rows)  # saved at once: a rerun skips it
        _write_json(os.path.join(out, PARETO_JSON), pareto_report(rows))
        if row["diverged"]:
            log(f"[{i + 1}/{len(plan)}] {key}: diverged at step {row['diverged_at_step']} (last finite loss "
                f"{row['last_finite_loss']}); recorded as diverged, {row['wall_s']:.0f} s")
        else:
            log(f"[{i + 1}/{len(plan)}] {key}: target gain {_fmt(row['target_gain'], '+.4f')} ({row['metric']}), "
                f"forgetting {_fmt(row['forgetting'], '+.4f')} nats/token, {row['wall_s']:.0f} s")

    wanted = {run_key(*p) for p in plan}
    rows_now = [r for r in rows if r["key"] in wanted]
    pareto = pareto_report(rows_now)
    _write_json(os.path.join(out, PARETO_JSON), pareto_report(rows))
    return {"runs": rows_now, "summary": summarize_runs(rows_now), "pareto": pareto, "out": out}


def _diverged_row(err, task, base):
    """A diverged run's measurements: what is known, and None where a number would be NaN or meaningless."""
    return {"diverged": True, "diverged_at_step": err.step, "last_finite_loss": err.last_finite_loss,
            "metric": task.metric, "higher_is_better": bool(task.higher_is_better), "target_before": None,
            "target_after": None, "target_gain": None, "source_before": base["source_before"], "source_after": None,
            "forgetting": None, "source_ppl_before": perplexity(base["source_before"]), "source_ppl_after": None,
            "trainable_params": None, "weight_drift": None, "delta_erank": None, "curve": []}


def json_safe(value):
    """`value` with every non-finite float (NaN, inf, -inf) replaced by None, recursively.

    JSON has no NaN or Infinity (json.dumps writes them, but strict readers refuse the file), so the sweep's
    files hold null where a number is not finite; a diverged run also says "diverged": true."""
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    if isinstance(value, (float, np.floating)):
        return float(value) if math.isfinite(value) else None
    if isinstance(value, np.integer):
        return int(value)
    return value


def _write_json(path, value):
    atomic_write(path, json.dumps(json_safe(value), indent=1, allow_nan=False))


def _fmt(value, spec):
    """A number as `spec`, or "diverged" / "n/a" where there is none."""
    return "n/a" if value is None else format(value, spec)


def _check_sweep_arguments(base_checkpoint, strategies, lrs, mitigations, steps, out=None, *, seeds=(0,),
                           batch_size=1, replay_fraction=0.0, ewc_lambda=0.0, l2sp_alpha=0.0, wise_alphas=()):
    """ValueError naming the first bad argument of run_sweep (before any work is done: nothing is created)."""
    for s in strategies:
        if s not in STRATEGIES:
            raise ValueError(f"unknown strategy {s!r}; valid strategies: {', '.join(STRATEGIES)}")
    for m in mitigations:
        if m not in MITIGATIONS:
            raise ValueError(f"unknown mitigation {m!r}; valid mitigations: {', '.join(MITIGATIONS)}")
    if not strategies or not mitigations:
        raise ValueError("strategies and mitigations must each name at least one")
    if not lrs or not all(math.isfinite(float(lr)) and float(lr) > 0 for lr in lrs):
        raise ValueError(f"lrs must be finite positive numbers, got {list(lrs)!r}")
    if steps < 1 or batch_size < 1:
        raise ValueError(f"steps and batch_size must be at least 1, got {steps}, {batch_size}")
    if not len(seeds) or any(int(seed) < 0 for seed in seeds):
        raise ValueError(f"seeds must be one or more integers >= 0, got {list(seeds)!r}")
    if not (math.isfinite(replay_fraction) and 0.0 <= replay_fraction <= 1.0):
        raise ValueError(f"replay_fraction must lie in [0, 1] (share of each batch from the source), got {replay_fraction}")
    for name, value in (("ewc_lambda", ewc_lambda), ("l2sp_alpha", l2sp_alpha)):
        if not (math.isfinite(value) and value >= 0):
            raise ValueError(f"{name} must be a finite number >= 0, got {value}")
    bad = [a for a in wise_alphas if not (math.isfinite(float(a)) and 0.0 <= float(a) <= 1.0)]
    if bad:
        raise ValueError(f"wise_alphas must lie in [0, 1] (0 = pretrained, 1 = fine-tuned), got {bad}")
    if not os.path.exists(base_checkpoint):
        raise ValueError(f"no checkpoint at {base_checkpoint!r}; make one with `python -m tinyft pretrain` first")
    if not os.path.isfile(base_checkpoint):
        raise ValueError(f"{base_checkpoint!r} is a folder, not a checkpoint file; pass its ckpt.npz")
    if out is not None:
        checkpoint.check_output_folder(out, SWEEP_FILES)
        checkpoint.refuse_own_input([os.path.join(out, name) for name in SWEEP_FILES], [base_checkpoint])


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
    try:
        with open(runs_path, encoding="utf-8") as f:
            saved = json.load(f)
        if not isinstance(saved, dict) or not isinstance(saved.get("settings"), dict) or \
                not isinstance(saved.get("runs"), list):
            raise ValueError("expected an object with 'settings' and 'runs'")
    except (OSError, ValueError) as err:
        raise ValueError(f"--out: {runs_path} cannot be read back ({err}); move it away or use a new --out") from None
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
    _write_json(os.path.join(out, RUNS_JSON), {"settings": settings, "runs": rows})
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=CSV_COLUMNS, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    atomic_write(os.path.join(out, RUNS_CSV), buffer.getvalue())


def summarize_runs(rows):
    """Mean and spread over seeds of each (strategy, lr, mitigation): target_gain and forgetting,
    with std the sample standard deviation (ddof = 1; 0 for a single seed). One dict per group.
    A group with a diverged seed has no mean: its means and stds are None and n_diverged counts them."""
    groups = {}
    for row in rows:
        groups.setdefault((row["strategy"], row["lr"], row["mitigation"]), []).append(row)
    out = []
    for (strategy, lr, mitigation), runs in groups.items():
        counted = [r["trainable_params"] for r in runs if r.get("trainable_params") is not None]
        n_diverged = sum(bool(r.get("diverged")) for r in runs)
        item = {"label": f"{strategy} lr={lr:g} {mitigation}", "strategy": strategy, "lr": lr,
                "mitigation": mitigation, "n_seeds": len(runs), "n_diverged": n_diverged,
                "trainable_params": counted[0] if counted else None}
        for key in ("target_gain", "forgetting"):
            values = np.array([np.nan if r.get(key) is None else r[key] for r in runs], dtype=np.float64)
            finite = not n_diverged and bool(np.isfinite(values).all())
            item[f"{key}_mean"] = float(values.mean()) if finite else None
            item[f"{key}_std"] = (float(values.std(ddof=1)) if len(values) > 1 else 0.0) if finite else None
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
    measured = [item for item in summary if item["target_gain_mean"] is not None and item["forgetting_mean"] is not None]
    flags = dict(zip(map(id, measured), pareto_front(measured, "target_gain_mean", "forgetting_mean")))
    points = [{**item, "pareto_optimal": flags.get(id(item), False)} for item in summary]  # diverged: never optimal
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
        trainable = "-" if s.get("trainable_params") is None else f"{s['trainable_params']:,}"
        if s.get("n_diverged") or s["target_gain_mean"] is None or s["forgetting_mean"] is None:  # no mean
            said = f"diverged ({s['n_diverged']}/{s['n_seeds']})" if s.get("n_diverged") else "not finite"
            lines.append(f"{s['label']:<38} {s['n_seeds']:>5} {said:>18} {said:>18}  {trainable:>10}")
            continue
        lines.append(f"{s['label']:<38} {s['n_seeds']:>5} "
                     f"{s['target_gain_mean']:>+9.4f} ±{s['target_gain_std']:<7.4f} "
                     f"{s['forgetting_mean']:>+9.4f} ±{s['forgetting_std']:<7.4f}  {trainable:>10}")
    return "\n".join(lines)


# ====================================================================================================
# 2. Seeds and intervals
# ====================================================================================================
#
# An experiment run with one seed gives one number; the same experiment with another seed gives another.
# With n seeds we report the mean and a 95% confidence interval from Student's t distribution:
#
#     mean +- t_{(1+level)/2, n-1} * s / sqrt(n),      s = the sample standard deviation (ddof=1)
#
# which assumes the per-seed values are independent draws from a roughly normal distribution. For a
# comparison (A against B under the same seeds) the interval is taken over the per-seed differences
# A_i - B_i: the "paired" interval, much narrower than comparing two separate intervals when the seed
# moves A and B together (same data order, same initial adapters).

VERDICTS = ("supported", "not supported", "within noise", "one seed")


def _log_beta(a, b):
    return math.lgamma(a) + math.lgamma(b) - math.lgamma(a + b)


def _beta_continued_fraction(a, b, x, max_terms=300, tol=1e-15):
    """The continued fraction of the incomplete beta function, evaluated by Lentz's method.

    I_x(a, b) = x^a (1-x)^b / (a B(a, b)) * 1 / (1 + d1 / (1 + d2 / (1 + ...))), with
    d_{2m+1} = -(a+m)(a+b+m) x / ((a+2m)(a+2m+1)) and d_{2m} = m(b-m) x / ((a+2m-1)(a+2m)).
    It converges fast for x < (a+1)/(a+b+2); the caller uses the symmetry I_x(a,b) = 1 - I_{1-x}(b,a)
    otherwise.
    """
    tiny = 1e-300
    c, d = 1.0, 1.0 - (a + b) * x / (a + 1.0)
    d = 1.0 / (d if abs(d) > tiny else tiny)
    f = d
    for m in range(1, max_terms + 1):
        for numerator in (m * (b - m) * x / ((a + 2 * m - 1) * (a + 2 * m)),          # d_{2m}
                          -(a + m) * (a + b + m) * x / ((a + 2 * m) * (a + 2 * m + 1))):  # d_{2m+1}
            d = 1.0 + numerator * d
            d = 1.0 / (d if abs(d) > tiny else tiny)
            c = 1.0 + numerator / c
            c = c if abs(c) > tiny else tiny
            f *= c * d
        if abs(c * d - 1.0) < tol:
            break
    return f


def regularized_incomplete_beta(a, b, x):
    """I_x(a, b) = B(x; a, b) / B(a, b) for a, b > 0 and 0 <= x <= 1 (the CDF of a Beta(a, b) variable)."""
    if x <= 0.0:
        return 0.0
    if x >= 1.0:
        return 1.0
    front = math.exp(a * math.log(x) + b * math.log1p(-x) - _log_beta(a, b))
    if x < (a + 1.0) / (a + b + 2.0):
        return front * _beta_continued_fraction(a, b, x) / a
    return 1.0 - front * _beta_continued_fraction(b, a, 1.0 - x) / b


def t_cdf(t, df):
    """P(T <= t) for Student's t with df degrees of freedom: for t >= 0 it is 1 - I_{df/(df+t^2)}(df/2, 1/2) / 2."""
    if df <= 0:
        raise ValueError(f"df must be positive, got {df}")
    tail = 0.5 * regularized_incomplete_beta(df / 2.0, 0.5, df / (df + t * t))  # P(T > |t|)
    return 1.0 - tail if t >= 0 else tail


def t_quantile(p, df):
    """The t value with P(T <= t) = p (Student's t, df degrees of freedom), found by bisection on t_cdf.

    t_quantile(0.975, 4) = 2.7764...: the multiplier of s/sqrt(n) in a 95% interval from 5 seeds.
    Bisection is slow (about 100 halvings) but plain to read, and exact to float64's last digits.
    """
    if not 0.0 < p < 1.0:
        raise ValueError(f"p must be strictly between 0 and 1, got {p}")
    if df <= 0:
        raise ValueError(f"df must be positive, got {df}")
    if p < 0.5:
        return -t_quantile(1.0 - p, df)
    lo, hi = 0.0, 1.0
    while t_cdf(hi, df) < p:  # grow the bracket: for df = 1 and p = 0.9995 the answer is 636.6
        lo, hi = hi, 2.0 * hi
    for _ in range(200):
        mid = 0.5 * (lo + hi)
        if t_cdf(mid, df) < p:
            lo = mid
        else:
            hi = mid
        if hi - lo <= 1e-15 * max(1.0, hi):
            break
    return 0.5 * (lo + hi)


def _check_level(level):
    if not 0.0 < float(level) < 1.0:
        raise ValueError(f"level must be strictly between 0 and 1 (e.g. 0.95), got {level}")


def _as_values(values, argument="values"):
    array = np.asarray(values, dtype=np.float64).ravel()
    if array.size == 0:
        raise ValueError(f"{argument} is empty: an interval needs at least one value")
    if not np.all(np.isfinite(array)):
        raise ValueError(f"{argument} holds non-finite values ({array.tolist()}): a diverged run has no mean; "
                         "report it as diverged instead")
    return array


def mean_ci(values, level=0.95):
    """(mean, lo, hi): the mean of `values` (one per seed) and its Student's t confidence interval.

    With a single value there is no spread to estimate: lo and hi are NaN, and nothing should print a +-.
    """
    _check_level(level)
    x = _as_values(values)
    n, mean = len(x), float(x.mean())
    if n == 1:
        return mean, float("nan"), float("nan")
    s = float(x.std(ddof=1))
    half = t_quantile((1.0 + level) / 2.0, n - 1) * s / math.sqrt(n)
    return mean, mean - half, mean + half


def paired_difference(a, b, level=0.95):
    """(mean, lo, hi) of a_i - b_i: A against B measured under the same seeds, in the same order."""
    a, b = _as_values(a, "a"), _as_values(b, "b")
    if a.shape != b.shape:
        raise ValueError(f"a paired difference needs one a and one b per seed: got {len(a)} and {len(b)} values")
    return mean_ci(a - b, level)


def verdict(lo, hi, direction=1):
    """The one rule every printed conclusion follows, from an interval on an effect's size.

    The claim says the effect is positive (direction=+1) or negative (direction=-1).
      "supported"      the interval excludes zero on the claimed side
      "not supported"  the interval excludes zero on the other side: the data say the opposite
      "within noise"   the interval contains zero: these seeds cannot tell
      "one seed"       no interval (lo, hi NaN): no verdict from a single run
    """
    if direction not in (1, -1):
        raise ValueError(f"direction must be +1 (the claim: the effect is positive) or -1, got {direction!r}")
    if math.isnan(lo) or math.isnan(hi):
        return "one seed"
    if lo > hi:
        raise ValueError(f"an interval needs lo <= hi, got ({lo}, {hi})")
    lo, hi = direction * lo, direction * hi
    lo, hi = min(lo, hi), max(lo, hi)
    if lo > 0:
        return "supported"
    if hi < 0:
        return "not supported"
    return "within noise"


def format_estimate(mean, lo, hi, digits=3):
    """'0.412 [0.371, 0.453]' with an interval, or '0.412' alone when there is none (one seed)."""
    if math.isnan(lo) or math.isnan(hi):
        return f"{mean:.{digits}f}"
    return f"{mean:.{digits}f} [{lo:.{digits}f}, {hi:.{digits}f}]"


def over_seeds(fn, seeds, log=None):
    """[fn(seed) for seed in seeds], with one line of progress per seed when `log` is given.

    `fn` runs one whole experiment (build data, train, evaluate) from its seed and returns its numbers.
    """
    seeds = [int(s) for s in seeds]
    if not seeds:
        raise ValueError("seeds is empty: give at least one seed, e.g. range(3)")
    if len(set(seeds)) != len(seeds):
        raise ValueError(f"seeds repeat ({seeds}): each seed must be a different run")
    results = []
    for i, seed in enumerate(seeds):
        if log is not None:
            log(f"seed {seed} ({i + 1}/{len(seeds)})")
        results.append(fn(seed))
    return results


# ====================================================================================================
# 3. Choosing on validation
# ====================================================================================================
#
# A knob (a learning rate, EWC's lambda, WiSE-FT's alpha) chosen by its score on the split that is then
# reported flatters the result: the maximum of several noisy test scores is biased upwards. So a choice
# reads only validation scores; the test score of the chosen setting is reported afterwards.


def choose_on_validation(candidates, validation_score, higher_is_better=True):
    """The candidate with the best validation score, and every candidate's score.

    `validation_score(candidate) -> float` must evaluate on a validation split only; nothing here can see
    a test score. Ties go to the earlier candidate (list the cheaper or simpler setting first).
    Returns (best, scores) with scores a list in candidates' order.
    """
    candidates = list(candidates)
    if not candidates:
        raise ValueError("candidates is empty: give at least one setting to choose from")
    scores = [float(validation_score(c)) for c in candidates]
    finite = [i for i, s in enumerate(scores) if math.isfinite(s)]
    if not finite:
        raise ValueError(f"every candidate's validation score is non-finite ({scores}): nothing to choose")
    sign = 1.0 if higher_is_better else -1.0
    best = max(finite, key=lambda i: (sign * scores[i], -i))
    return candidates[best], scores
