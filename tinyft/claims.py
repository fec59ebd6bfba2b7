"""claims: each claim about fine-tuning as an experiment, run over seeds, with a 95% interval and a verdict.

Map of this file:
  1. Settings   ClaimSettings; QUICK (a tiny base, 2 seeds, minutes) and FULL (the course's base model)
  2. The bench  Bench: one pretrained base, its held-out source text cut into a half for choosing and a
                half for reporting, tasks built once, fine-tuning runs remembered so claims share them
  3. Claims     claim_c1 ... claim_c11: each runs its experiment per seed and returns table rows
  4. Running    CLAIMS (id -> claim, function), run_claims(ids, settings), format_claims(rows) and
                format_claims_markdown(rows) (the table of docs/claims.md)
A row: {"id", "claim", "metric", "value", "ci95": [lo, hi], "seeds", "verdict", "detail"}. Every verdict
comes from experiments.verdict on an interval over seeds (paired when two methods share the seeds); every
choice (a learning rate, a mitigation's strength, WiSE-FT's alpha) is made on a validation split with a
tuning seed that is never reported, and the numbers in the table come from test splits.
Lecture note: docs/claims.md (each claim, the command that measured it, what it means at this scale).
"""

import dataclasses
import json
import math
import os
import time
from dataclasses import dataclass, field

import numpy as np

from . import checkpoint
from .checkpoint import atomic_write
from .baselines import (
    calibrated_prompting,
    compare_costs,
    label_probabilities,
    pretraining_cost,
    train_from_scratch,
    zero_shot_order,
)
from .experiments import choose_on_validation, mean_ci, verdict
from .finetune import FinetuneConfig, finetune, gpt_of
from .forgetting import EWC, L2SP, Replay, fisher_diagonal, source_data, source_loss, wise_ft
from .loops import check_out_dir
from .pretrain import course_model, fixed_batches
from .tasks import build_task

# ====================================================================================================
# 1. Settings
# ====================================================================================================


@dataclass(frozen=True)
class ClaimSettings:
    """How big each experiment is. Every method gets the same steps and chooses its lr from the same grid."""

    base: str = "base"  # pretrain.course_model preset of the shared base model
    large: str | None = "large"  # C5's larger generic model (None: C5 is skipped)
    seeds: tuple = (0, 1, 2)  # reported seeds (task draw, batch order, new weights)
    tuning_seed: int = 100  # choices are made with this seed, on validation splits only
    steps: int = 100
    batch_size: int = 16
    n_examples: int = 500
    lrs: tuple = (3e-4, 1e-3, 3e-3)  # the grid every method (fine-tuning, scratch, each strategy) picks from
    sweep_lrs: tuple = (1e-4, 3e-4, 1e-3, 3e-3)  # C3 and C11
    head_lrs: tuple = (1e-3, 1e-2)  # C10: a new head's lr (LP-FT: the probe's), chosen on validation
    sizes: tuple = (50, 1000)  # C6, C9: the smallest and the largest training set
    epochs: int = 3  # C9: steps = epochs * n / batch_size (at least `steps`): every size sees its data alike
    label_noise: float = 0.3
    imbalance: float = 4.0
    strengths: dict = field(default_factory=lambda: {"replay": (0.1, 0.25, 0.5), "ewc": (1e2, 1e3, 1e4),
                                                     "l2sp": (0.1, 0.3, 1.0), "wise": (0.25, 0.5, 0.75)})
    source_batches: int = 8  # per half (choosing / reporting), of batch_size sequences of the base's block
    eval_examples: int = 300  # classification splits are cut to this many examples (speed), twins kept


QUICK = ClaimSettings(base="tiny", large=None, seeds=(0, 1), steps=30, batch_size=8, n_examples=200,
                      lrs=(1e-3, 3e-3), sweep_lrs=(1e-4, 3e-3), head_lrs=(1e-2,), sizes=(50, 200), epochs=1,
                      strengths={"replay": (0.25,), "ewc": (1e3,), "l2sp": (0.3,), "wise": (0.5,)},
                      source_batches=2, eval_examples=80)
FULL = ClaimSettings()

# ====================================================================================================
# 2. The bench: the base model, the source text, tasks and remembered runs
# ====================================================================================================


class Bench:
    """What every claim measures against. Fine-tuning runs are remembered by their settings, so C2 reads
    C1's runs and C7 reuses C3's instead of training the same thing twice."""

    def __init__(self, settings, log=print):
        self.settings, self.log = settings, log
        self.checkpoint = course_model(settings.base, log=log)
        self.meta = checkpoint.load(self.checkpoint).meta
        self.tokenizer, self.source_train, source_val = source_data(self.checkpoint)
        self.block_size = self.base_model().config.block_size
        half = len(source_val) // 2  # two halves of text pretraining never trained on
        T, n, B = self.block_size, settings.source_batches, settings.batch_size
        self.source_choose = fixed_batches(source_val[:half], n, B, T, seed=4321)  # for choosing strengths
        self.source_report = fixed_batches(source_val[half:], n, B, T, seed=8765)  # for the table
        self.source_before = {"choose": source_loss(self.base_model(), self.source_choose),
                              "report": source_loss(self.base_model(), self.source_report)}
        self._tasks, self._runs, self._fisher = {}, {}, None

    def base_model(self):
        return checkpoint.load_model(self.checkpoint)  # a fresh pretrained copy

    def task(self, name, n=None, seed=0, label_noise=0.0, imbalance=1.0):
        key = (name, n or self.settings.n_examples, seed, label_noise, imbalance)
        if key not in self._tasks:
            block = 128 if name in ("code", "kind", "order") else self.block_size
            task = build_task(name, self.tokenizer, n_examples=key[1], seed=seed, block_size=min(block, self.block_size),
                              label_noise=label_noise, imbalance=imbalance)
            if task.task_type == "classification":  # evaluation splits cut for speed
                for split in ("val", "test", "shifted"):
                    setattr(task, split, _first_examples(getattr(task, split), self.settings.eval_examples))
            self._tasks[key] = task
        return self._tasks[key]

    def run(self, task_name, seed, lr, strategy="full", scratch=False, mitigation=None, strength=None,
            n=None, steps=None, classifier="label_tokens", label_noise=0.0, imbalance=1.0, lp_steps=0,
            head_lr=None):
        """One fine-tuning (or from-scratch) run, measured: the task metric on val / test / shifted before
        and after, the forgetting on both source halves, the cost, and class predictions on test."""
        key = (task_name, seed, lr, strategy, scratch, mitigation, strength, n, steps, classifier, label_noise,
               imbalance, lp_steps, head_lr)
        if key in self._runs:
            return self._runs[key]
        s = self.settings
        task = self.task(task_name, n, seed, label_noise, imbalance)
        steps = steps or s.steps
        config = FinetuneConfig(task=task_name, strategy=strategy, lr=lr, steps=steps, batch_size=s.batch_size,
                                n_examples=n or s.n_examples, warmup_steps=max(1, steps // 10), eval_every=steps,
                                seed=seed, out=None, classifier=classifier, lp_steps=lp_steps, head_lr=head_lr,
                                lora_alpha=16, lora_rank=8)
        quiet = dict(progress=False, log=lambda *a, **k: None)
        if scratch:
            result = train_from_scratch(self.base_model(), task, config, **quiet)
        else:
            hooks = self._hooks(mitigation, strength)
            result = finetune(self.base_model(), task, config, mitigations=hooks, **quiet)
        self._runs[key] = self._measure(result, task, scratch)
        return self._runs[key]

    def _hooks(self, mitigation, strength):
        if mitigation in (None, "none", "wise"):
            return []
        if mitigation == "replay":
            return [Replay(self.source_train, strength)]
        if mitigation == "l2sp":
            return [L2SP(self.base_model(), strength)]
        if mitigation == "ewc":
            if self._fisher is None:
                batches = fixed_batches(self.source_train, 4, self.settings.batch_size, self.block_size, seed=99)
                self._fisher = fisher_diagonal(self.base_model(), batches)
            return [EWC(self.base_model(), lam=strength, fisher=self._fisher)]
        raise ValueError(f"mitigation: unknown {mitigation!r}; valid: none, replay, ewc, l2sp, wise")

    def _measure(self, result, task, scratch):
        m = result.metric
        plain = result.model is gpt_of(result.model) and not getattr(result.model, "head_untied", False)  # a GPT, tied
        out = {"metric": m, "higher_is_better": result.higher_is_better, "cost": result.cost,
               "state": gpt_of(result.model).state_dict() if plain else None}  # for WiSE-FT
        for split in ("val", "test", "shifted"):
            out[split] = float(result.after[split][m])
            out[f"{split}_before"] = float(result.before[split][m])
        if task.task_type == "lm":
            model = gpt_of(result.model)
            for half, batches in (("choose", self.source_choose), ("report", self.source_report)):
                out[f"forgetting_{half}"] = source_loss(model, batches) - self.source_before[half]
        if task.task_type == "classification" and plain:
            probabilities = label_probabilities(result.model, task.tokenizer, [e.prompt for e in task.test],
                                                task.label_ids)
            out["test_predictions"] = probabilities.argmax(axis=1)
        return out

    def best_lr(self, task_name, lrs=None, **kwargs):
        """The lr of the grid with the best validation metric, found with the tuning seed."""
        def score(lr):
            return self.run(task_name, self.settings.tuning_seed, lr, **kwargs)["val"]
        higher = self.task(task_name).higher_is_better
        best, _ = choose_on_validation(lrs or self.settings.lrs, score, higher_is_better=higher)
        return best

    def best_head_lr(self, task_name, lr, **kwargs):
        """The new head's lr (LP-FT: the probe's) from settings.head_lrs, best on validation, tuning seed."""
        def score(head_lr):
            return self.run(task_name, self.settings.tuning_seed, lr, head_lr=head_lr, **kwargs)["val"]
        best, _ = choose_on_validation(self.settings.head_lrs, score, higher_is_better=True)
        return best


def _first_examples(examples, n):
    """The first n examples of a split; for "order", the first n/2 passages with both their twins (so the
    classes stay balanced and every real passage keeps its shuffled twin)."""
    if not examples or examples[0].answer not in ("real", "shuffled"):
        return examples[:n]
    order = list(dict.fromkeys(tuple(sorted(e.text.split(" "))) for e in examples))
    keep = set(order[:n // 2])
    return [e for e in examples if tuple(sorted(e.text.split(" "))) in keep]


# ====================================================================================================
# 3. The claims
# ====================================================================================================


def _row(claim_id, claim, metric, values, direction=1, detail=""):
    """A table row from per-seed effect sizes: mean, 95% interval and verdict (experiments.verdict)."""
    mean, lo, hi = mean_ci(values)
    return {"id": claim_id, "claim": claim, "metric": metric, "value": mean,
            "ci95": [None if math.isnan(lo) else lo, None if math.isnan(hi) else hi],
            "seeds": len(values), "verdict": verdict(lo, hi, direction), "detail": detail,
            "values": [float(v) for v in values]}


def _paired_row(claim_id, claim, metric, a, b, direction=1, detail=""):
    """Row on the per-seed differences a_i - b_i (the claim: positive when direction = +1): the interval of
    the differences is experiments.paired_difference's, which _row computes from them."""
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if a.shape != b.shape:
        raise ValueError(f"a paired row needs one a and one b per seed: got {len(a)} and {len(b)} values")
    return _row(claim_id, claim, metric, a - b, direction, detail)


def _better(run, task):
    """The metric oriented so that larger is better (accuracy as is; a loss negated)."""
    return run if task.higher_is_better else -run


def claim_c1(bench):
    """Fine-tuning uses what pretraining learned: the pretrained model against the same architecture from
    random weights, same data, steps and batch order; each picks its lr on validation."""
    rows, seeds = [], bench.settings.seeds
    for name in ("code", "order"):
        task = bench.task(name)
        lr_ft, lr_sc = bench.best_lr(name), bench.best_lr(name, scratch=True)
        ft = [_better(bench.run(name, s, lr_ft)["test"], task) for s in seeds]
        sc = [_better(bench.run(name, s, lr_sc, scratch=True)["test"], task) for s in seeds]
        metric = "test loss, scratch - fine-tuned (nats/token)" if name == "code" else \
            "test accuracy, fine-tuned - scratch"
        rows.append(_paired_row("C1", f"fine-tuning beats training from scratch ({name})", metric, ft, sc,
                                detail=f"lr fine-tune {lr_ft:g}, scratch {lr_sc:g}; {bench.settings.steps} steps each"))
    return rows


def claim_c2(bench):
    """Far less compute than pretraining: one fine-tuning run's FLOPs as a fraction of the base's pretraining."""
    pre = pretraining_cost(bench.meta, bench.base_model())
    lr = bench.best_lr("code")
    fractions = [compare_costs(bench.run("code", s, lr)["cost"], pre) for s in bench.settings.seeds]
    flops = [f["flops_fraction"] for f in fractions]
    wall = [f["wall_s_fraction"] for f in fractions if f["wall_s_fraction"] is not None]
    return [_row("C2", "fine-tuning costs far less compute than pretraining", "1 - FLOPs(fine-tune) / FLOPs(pretrain)",
                 [1 - f for f in flops], detail=f"FLOPs fraction {np.mean(flops):.4f}; wall-time fraction "
                                                f"{np.mean(wall):.4f}; pretraining {pre['tokens']:,} tokens")]


def claim_c3(bench):
    """A lower learning rate preserves knowledge (and learns less): the grid's largest lr against its smallest."""
    lrs, seeds = bench.settings.sweep_lrs, bench.settings.seeds
    low, high = min(lrs), max(lrs)
    runs = {lr: [bench.run("code", s, lr) for s in seeds] for lr in (low, high)}
    forgot = {lr: [r["forgetting_report"] for r in runs[lr]] for lr in runs}
    gain = {lr: [r["test_before"] - r["test"] for r in runs[lr]] for lr in runs}  # code loss down = learned
    return [_paired_row("C3", "a lower learning rate forgets less",
                        f"forgetting at lr {high:g} - at lr {low:g} (source loss, nats/token)", forgot[high], forgot[low]),
            _paired_row("C3", "...and learns less", f"target gain at lr {high:g} - at lr {low:g} (code loss, nats/token)",
                        gain[high], gain[low])]


def claim_c4(bench, strategies=("last_k", "lora")):
    """Training a subset of parameters trades learning for forgetting: full against each strategy."""
    seeds, rows = bench.settings.seeds, []
    lr_full = bench.best_lr("code")

    def gain(run):
        return run["test_before"] - run["test"]  # code loss down = learned

    full = [bench.run("code", s, lr_full) for s in seeds]
    for strategy in strategies:
        lr = bench.best_lr("code", strategy=strategy)
        sub = [bench.run("code", s, lr, strategy=strategy) for s in seeds]
        rows.append(_paired_row("C4", f"full learns more than {strategy}", "target gain, full - subset (nats/token)",
                                [gain(r) for r in full], [gain(r) for r in sub], detail=f"lr full {lr_full:g}, {strategy} {lr:g}"))
        rows.append(_paired_row("C4", f"full forgets more than {strategy}", "forgetting, full - subset (nats/token)",
                                [r["forgetting_report"] for r in full], [r["forgetting_report"] for r in sub]))
    return rows


def claim_c5(bench):
    """A small fine-tuned model beats a larger generic one on the specialized test split."""
    if bench.settings.large is None:
        return []
    large_ckpt = course_model(bench.settings.large, log=bench.log)
    large = checkpoint.load_model(large_ckpt)
    lr = bench.best_lr("code")
    small_ft, large_generic = [], []
    for s in bench.settings.seeds:
        task = bench.task("code", seed=s)
        small_ft.append(bench.run("code", s, lr)["test"])
        large_generic.append(float(task.evaluate(large, "test")["loss"]))
    n_small, n_large = bench.base_model().num_parameters(), large.num_parameters()
    return [_paired_row("C5", "a small fine-tuned model beats a larger generic one (code)",
                        "test loss, large generic - small fine-tuned (nats/token)", large_generic, small_ft,
                        detail=f"{n_small:,} vs {n_large:,} parameters")]


def _no_training_best(bench, name, seed):
    """The best no-training classifier on a task, chosen on validation: calibrated prompting at 0 or 1 shot,
    raw or calibrated, and for "order" the zero-shot loss threshold. Returns (label, test accuracy)."""
    task, model = bench.task(name, seed=seed), bench.base_model()
    options = {}
    for shots in (0, 1):
        val = calibrated_prompting(model, task, "val", shots=shots, seed=seed)
        test = calibrated_prompting(model, task, "test", shots=shots, seed=seed)
        options[f"{shots}-shot"] = (val["accuracy"], test["accuracy"])
        options[f"{shots}-shot calibrated"] = (val["calibrated_accuracy"], test["calibrated_accuracy"])
    if name == "order":
        zs = zero_shot_order(model, task)
        options["zero-shot loss threshold"] = (zs["val"], zs["test"])
    best, _ = choose_on_validation(list(options), lambda k: options[k][0])
    return best, options[best][1]


def claim_c6(bench):
    """When prompting is enough: fine-tuning at the smallest and largest size against the best no-training
    option (chosen on validation), on "order" and "kind"."""
    rows, seeds = [], bench.settings.seeds
    for name in ("order", "kind"):
        prompt = [_no_training_best(bench, name, s) for s in seeds]
        lr = bench.best_lr(name)
        for n in (min(bench.settings.sizes), max(bench.settings.sizes)):
            ft = [bench.run(name, s, lr, n=n, steps=_epoch_steps(bench, n))["test"] for s in seeds]
            rows.append(_paired_row("C6", f"fine-tuning on {n} examples beats prompting ({name})",
                                    "test accuracy, fine-tuned - best no-training option", ft, [p[1] for p in prompt],
                                    detail="no-training options chosen on val: " + ", ".join(sorted({p[0] for p in prompt}))))
    return rows


def claim_c7(bench):
    """Catastrophic forgetting, and what buys it back, at what price in learning. Each mitigation's strength is
    chosen on validation: the target's validation gain minus the forgetting on the choosing half of the
    source text (both in nats per token); the reporting half and the test split score the choice."""
    seeds, s = bench.settings.seeds, bench.settings
    lr = max(s.sweep_lrs)  # the setting that forgets most (C3): where a mitigation has something to buy back
    none = [bench.run("code", x, lr) for x in seeds]
    rows = [_row("C7", "fine-tuning forgets (source loss rises)", "forgetting (source loss after - before, nats/token)",
                 [r["forgetting_report"] for r in none])]
    for mitigation in ("replay", "ewc", "l2sp", "wise"):
        def tradeoff(strength, m=mitigation):
            r = _mitigated(bench, s.tuning_seed, lr, m, strength)
            return (r["val_before"] - r["val"]) - r["forgetting_choose"]
        strength, _ = choose_on_validation(s.strengths[mitigation], tradeoff)
        runs = [_mitigated(bench, x, lr, mitigation, strength) for x in seeds]
        detail = f"strength {strength:g} chosen on validation; lr {lr:g}"
        rows.append(_paired_row("C7", f"{mitigation} reduces forgetting", "forgetting, none - mitigated (nats/token)",
                                [r["forgetting_report"] for r in none], [r["forgetting_report"] for r in runs],
                                detail=detail))
        rows.append(_paired_row("C7", f"...and costs learning ({mitigation})",
                                "target gain, none - mitigated (code test loss, nats/token)",
                                [r["test_before"] - r["test"] for r in none], [r["test_before"] - r["test"] for r in runs],
                                detail=detail))
    return rows


def _mitigated(bench, seed, lr, mitigation, strength):
    """A run with a mitigation; WiSE-FT interpolates the plain run's weights after the fact."""
    if mitigation != "wise":
        return bench.run("code", seed, lr, mitigation=mitigation, strength=strength)
    plain = bench.run("code", seed, lr)
    task, mixed = bench.task("code", seed=seed), bench.base_model()
    mixed.load_state_dict(wise_ft(mixed.state_dict(), plain["state"], strength))
    out = {split: float(task.evaluate(mixed, split)["loss"]) for split in ("val", "test")}
    out.update(val_before=plain["val_before"], test_before=plain["test_before"])
    for half, batches in (("choose", bench.source_choose), ("report", bench.source_report)):
        out[f"forgetting_{half}"] = source_loss(mixed, batches) - bench.source_before[half]
    return out


def claim_c8(bench):
    """Data quality is magnified: label noise costs accuracy, and a skewed training set is amplified (the
    model predicts the majority class more often than it occurs in training; Zhao et al. 2017)."""
    s, rows = bench.settings, []
    for name in ("kind", "order"):
        lr = bench.best_lr(name)
        clean = [bench.run(name, x, lr)["test"] for x in s.seeds]
        noisy = [bench.run(name, x, lr, label_noise=s.label_noise)["test"] for x in s.seeds]
        rows.append(_paired_row("C8", f"label noise {s.label_noise:.0%} lowers accuracy ({name})",
                                "test accuracy, clean - noisy", clean, noisy))
        amplification = []
        for x in s.seeds:
            run = bench.run(name, x, lr, imbalance=s.imbalance)
            task = bench.task(name, seed=x, imbalance=s.imbalance)
            amplification.append(bias_amplification(task.train, run["test_predictions"], len(task.classes)))
        rows.append(_row("C8", f"a {s.imbalance:g}:1 class skew is amplified ({name})",
                         "bias amplification: predicted - training share of over-represented classes",
                         amplification))
    return rows


def bias_amplification(train_examples, predictions, n_classes):
    """Zhao et al. 2017, for one attribute: the mean over classes over-represented in training (share > 1/K)
    of (share of test predictions - share of training labels). > 0: the model exaggerates the skew."""
    train = np.bincount([e.label for e in train_examples], minlength=n_classes) / len(train_examples)
    predicted = np.bincount(np.asarray(predictions), minlength=n_classes) / len(predictions)
    over = train > 1.0 / n_classes
    return float(np.mean(predicted[over] - train[over]))


def _epoch_steps(bench, n):
    s = bench.settings
    return max(s.steps, s.epochs * n // s.batch_size)


def claim_c9(bench):
    """Hundreds to thousands of examples are needed: accuracy (or code loss) at the largest size minus at the
    smallest, with a fixed number of epochs at every size."""
    s, rows = bench.settings, []
    small, large = min(s.sizes), max(s.sizes)
    for name in ("order", "kind", "code"):
        task = bench.task(name)
        lr = bench.best_lr(name)
        at = {n: [_better(bench.run(name, x, lr, n=n, steps=_epoch_steps(bench, n))["test"], task) for x in s.seeds]
              for n in (small, large)}
        rows.append(_paired_row("C9", f"{large} examples beat {small} ({name})",
                                f"test {task.metric} at n={large} - at n={small}" + (" (negated loss)" if name == "code" else ""),
                                at[large], at[small], detail=f"{s.epochs} epochs, at least {s.steps} steps"))
    return rows


def claim_c10(bench):
    """Models fail on shifted data; LP-FT (a new head probed first) and WiSE-FT (alpha on validation) help."""
    s, rows = bench.settings, []
    for name in ("kind", "order"):
        lr = bench.best_lr(name)
        ft = [bench.run(name, x, lr) for x in s.seeds]
        rows.append(_paired_row("C10", f"accuracy drops on shifted data ({name})", "test - shifted accuracy",
                                [r["test"] for r in ft], [r["shifted"] for r in ft]))
        probe = s.steps // 3  # equal budgets: LP-FT = probe + rest, FT with a new head = the same total
        lp_kwargs = dict(strategy="lp_ft", classifier="head", lp_steps=probe, steps=s.steps - probe)
        head_ft, head_lp = bench.best_head_lr(name, lr, classifier="head"), bench.best_head_lr(name, lr, **lp_kwargs)
        ft_head = [bench.run(name, x, lr, classifier="head", head_lr=head_ft) for x in s.seeds]
        lp = [bench.run(name, x, lr, head_lr=head_lp, **lp_kwargs) for x in s.seeds]
        rows.append(_paired_row("C10", f"LP-FT beats FT on shifted data ({name}, new head)",
                                "shifted accuracy, LP-FT - FT", [r["shifted"] for r in lp], [r["shifted"] for r in ft_head],
                                detail=f"{probe} probe + {s.steps - probe} full steps vs {s.steps} full steps; head lr "
                                       f"(LP-FT: the probe's) chosen on validation: LP-FT {head_lp:g}, FT {head_ft:g}"))
        alpha, _ = choose_on_validation(s.strengths["wise"], lambda a: _wise_scores(bench, name, s.tuning_seed, lr, a)["val"])
        wise = [_wise_scores(bench, name, x, lr, alpha)["shifted"] for x in s.seeds]
        rows.append(_paired_row("C10", f"WiSE-FT beats FT on shifted data ({name})", "shifted accuracy, WiSE-FT - FT",
                                wise, [r["shifted"] for r in ft], detail=f"alpha {alpha:g} chosen on validation"))
    return rows


def _wise_scores(bench, name, seed, lr, alpha):
    """The metric on val / test / shifted of (1 - alpha) * pretrained + alpha * fine-tuned weights."""
    plain = bench.run(name, seed, lr)
    task, model = bench.task(name, seed=seed), bench.base_model()
    model.load_state_dict(wise_ft(model.state_dict(), plain["state"], alpha))
    return {split: float(task.evaluate(model, split)[task.metric]) for split in ("val", "test", "shifted")}


def claim_c11(bench):
    """Hyperparameters matter: the lr chosen on validation against the one validation ranks worst, on test."""
    s = bench.settings
    task = bench.task("code")
    val = {lr: np.mean([bench.run("code", s.tuning_seed, lr)["val"]]) for lr in s.sweep_lrs}
    best = min(val, key=val.get) if not task.higher_is_better else max(val, key=val.get)
    worst = max(val, key=val.get) if not task.higher_is_better else min(val, key=val.get)
    b = [_better(bench.run("code", x, best)["test"], task) for x in s.seeds]
    w = [_better(bench.run("code", x, worst)["test"], task) for x in s.seeds]
    return [_paired_row("C11", "the lr chosen on validation beats the worst one", "code test loss, worst - chosen",
                        b, w, detail=f"chosen {best:g}, worst {worst:g} of {', '.join(f'{lr:g}' for lr in s.sweep_lrs)}")]


# ====================================================================================================
# 4. Running claims
# ====================================================================================================

CLAIMS = {
    "C1": ("fine-tuning uses what pretraining learned", claim_c1),
    "C2": ("far less compute than pretraining", claim_c2),
    "C3": ("a lower learning rate preserves knowledge", claim_c3),
    "C4": ("training a subset of parameters trades learning for forgetting", claim_c4),
    "C5": ("a small fine-tuned model beats a larger generic one", claim_c5),
    "C6": ("when prompting is enough", claim_c6),
    "C7": ("catastrophic forgetting, and what buys it back", claim_c7),
    "C8": ("data quality is magnified", claim_c8),
    "C9": ("hundreds to thousands of examples are needed", claim_c9),
    "C10": ("models fail on shifted data; LP-FT and WiSE-FT help", claim_c10),
    "C11": ("hyperparameters matter", claim_c11),
}


def check_claim_ids(ids):
    """The claim ids, upper-cased and checked (ValueError naming the unknown ones)."""
    ids = [i.strip().upper() for i in ids if i.strip()]
    unknown = [i for i in ids if i not in CLAIMS]
    if unknown or not ids:
        raise ValueError(f"--only: unknown claim id(s) {', '.join(unknown) or '(none given)'}; valid: {', '.join(CLAIMS)}")
    return ids


def run_claims(ids=None, settings=QUICK, out=None, log=print):
    """Run the claims `ids` (all by default) on one bench; returns the rows in order.

    out: a folder for claims.json, rewritten (atomically) after each claim; a rerun with the same settings
    reads back the claims already there instead of running them again (an interrupted run resumes).
    """
    ids = check_claim_ids(ids or list(CLAIMS))
    saved, path = {}, None
    if out is not None:  # checked before any work; the folder is made only when all is well
        checkpoint.check_output_folder(out, (CLAIMS_JSON,))
        path = os.path.join(out, CLAIMS_JSON)
        saved = _saved_claims(path, settings)
    bench = None
    for claim_id in ids:
        if claim_id in saved:
            log(f"{claim_id}: read back from {path}")
            continue
        log(f"{claim_id}: {CLAIMS[claim_id][0]}")
        bench = bench or Bench(settings, log=log)
        t0 = time.perf_counter()
        saved[claim_id] = CLAIMS[claim_id][1](bench)
        for row in saved[claim_id]:
            row["seconds"] = round(time.perf_counter() - t0, 1)
        if path is not None:
            check_out_dir(out)
            atomic_write(path, json.dumps({"settings": _settings_dict(settings), "claims": saved}, indent=1))
    return [row for claim_id in ids for row in saved[claim_id]]


CLAIMS_JSON = "claims.json"


def _settings_dict(settings):
    return json.loads(json.dumps(dataclasses.asdict(settings)))  # tuples -> lists, as JSON reads them back


def _saved_claims(path, settings):
    if not os.path.exists(path):
        return {}
    try:
        with open(path, encoding="utf-8") as f:
            saved = json.load(f)
        if not isinstance(saved, dict) or not isinstance(saved.get("claims"), dict):
            raise ValueError("expected an object with 'settings' and 'claims'")
    except (OSError, ValueError) as err:
        raise ValueError(f"--out: {path} cannot be read back ({err}); move it away or use another --out") from None
    if saved.get("settings") != _settings_dict(settings):
        raise ValueError(f"--out: {path} holds claims run with other settings; use the same settings to resume, "
                         "or another --out")
    return saved["claims"]


def format_claims(rows):
    """The claims table: id, claim, metric, value, 95% interval (none from one seed), seeds, verdict."""
    lines = [f"{'id':<4} {'claim':<58} {'value':>9} {'95% interval':>22} {'seeds':>5}  verdict"]
    for r in rows:
        lo, hi = r["ci95"]
        interval = "" if lo is None else f"[{lo:+.4f}, {hi:+.4f}]"
        lines.append(f"{r['id']:<4} {r['claim'][:58]:<58} {r['value']:>+9.4f} {interval:>22} {r['seeds']:>5}  {r['verdict']}")
        lines.append(f"{'':<4}   metric: {r['metric']}" + (f"; {r['detail']}" if r.get("detail") else ""))
    return "\n".join(lines)


def format_claims_markdown(rows):
    """The claims table as Markdown (docs/claims.md is pasted from `python -m tinyft claims --markdown`)."""
    lines = ["| id | claim | metric | value | 95% interval | seeds | verdict |", "|---|---|---|---|---|---|---|"]
    for r in rows:
        lo, hi = r["ci95"]
        interval = "(one seed)" if lo is None else f"[{lo:+.4f}, {hi:+.4f}]"
        metric = r["metric"] + (f"; {r['detail']}" if r.get("detail") else "")
        lines.append(f"| {r['id']} | {r['claim']} | {metric} | {r['value']:+.4f} | {interval} | {r['seeds']} | "
                     f"**{r['verdict']}** |")
    return "\n".join(lines)
