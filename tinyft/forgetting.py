"""Forgetting: measure how much a fine-tuned model loses of what pretraining taught it, and what reduces it.

Map of this file:
  0. The sign convention   (once, here; every function below uses it)
  1. Measurements          source_data (the pretraining text of a checkpoint), source_loss / perplexity,
                           source_loss_callback (the curve), forgetting, target_gain,
                           learning_forgetting_curve (one run), pareto_front (across runs)
  2. Task sequences        average_accuracy, backward_transfer, forward_transfer, forgetting_measure on R[i, j]
  3. Where the change went effective_state, weight_drift, total_weight_drift, effective_rank,
                           delta_effective_ranks
  4. Mitigations           Replay, fisher_diagonal + EWC, L2SP: finetune.Hook subclasses
  5. WiSE-FT               wise_ft(pre, ft, alpha): interpolate two weight sets; wise_ft_sweep scores each alpha
Papers: EWC (Kirkpatrick et al. 2017), L2-SP (Li et al. 2018), GEM / BWT (Lopez-Paz & Ranzato 2017),
RWalk's forgetting measure (Chaudhry et al. 2018), effective rank (Roy & Vetterli 2007), "LoRA Learns Less
and Forgets Less" (Biderman et al. 2024), WiSE-FT (Wortsman et al. 2022). Lecture note: docs/forgetting.md.
The sweep that runs many fine-tunings and writes runs.csv / pareto.json is in experiments.py, and
`python -m tinyft forgetting` in cli.py.

0. THE SIGN CONVENTION. "Source" is the pretraining data (its held-out split), "target" the fine-tuning task.
     forgetting  = source loss after - source loss before        (nats/token; > 0 means the model forgot)
     target gain = target metric after - before    if higher is better (accuracy, exact match)
                 = target metric before - after    if lower is better  (a loss)
                                                                 (> 0 means the model learned the task)
   So in every table and plot: right (more gain) is good, up (more forgetting) is bad. Task-sequence
   metrics follow the same rule: backward/forward transfer > 0 is good, the forgetting measure > 0 is bad.
"""

import dataclasses
import math
import os

import numpy as np

from . import checkpoint, data
from .autograd import rng_preserved
from .classifier import ClassifierModel
from .finetune import Hook, evaluate, gpt_of, untie_head
from .lora import LoRALinear, is_lora_parameter
from .nn import GPT
from .pretrain import PretrainConfig, estimate_loss, prepare_data
from .tokenizers import tokenizer_from_dict

MITIGATIONS = ("none", "replay", "ewc", "l2sp")


# ----------------------------------------------------------------------------------------------------
# 1. Measurements
# ----------------------------------------------------------------------------------------------------


def source_loss(model, source_batches):
    """L_src: the mean next-token loss (nats/token) on held-out SOURCE text, pretrain.estimate_loss by its
    forgetting name. A ClassifierModel is scored through its GPT body (the language model it still holds).

        L_src(theta) = (1 / n_batches) * sum over batches (x, y) of  mean_{b,t} -log p_theta(y[b,t] | x[b, :t+1])

    source_batches: held-out pretraining text, the SAME list before, during and after fine-tuning
    (pretrain.fixed_batches makes one), so differences are the model's alone.
    """
    return estimate_loss(gpt_of(model), source_batches)


def perplexity(loss):
    """exp(loss): the number of equally likely tokens the model is as unsure as (loss in nats/token).
    inf when exp overflows (a loss above ~709 nats, as after a blow-up), NaN for a NaN loss."""
    try:
        return math.exp(float(loss))
    except OverflowError:
        return float("inf")


def source_data(ckpt):
    """The pretraining corpus of a checkpoint, split as pretraining split it: (tokenizer, train_ids, val_ids).

    ckpt: a path or a checkpoint.load() result whose meta holds "tokenizer" and "pretrain_config" (what
    `python -m tinyft pretrain` writes). The validation ids were never trained on: forgetting is measured
    there; replay and the Fisher draw from the train ids.
    """
    ckpt = checkpoint.load(ckpt) if isinstance(ckpt, (str, os.PathLike)) else ckpt
    meta = ckpt.meta
    if "tokenizer" not in meta or "pretrain_config" not in meta:
        raise ValueError(f"{ckpt.path!r} has no tokenizer or pretrain_config in its meta: forgetting needs a "
                         "checkpoint written by `python -m tinyft pretrain`")
    fields = {f.name for f in dataclasses.fields(PretrainConfig)}
    config = PretrainConfig(**{k: v for k, v in meta["pretrain_config"].items() if k in fields})
    prepared = prepare_data(config, tokenizer_from_dict(meta["tokenizer"]))
    return prepared["tokenizer"], prepared["train"], prepared["val"]


class SourceLossCurve(Hook):
    """A finetune callback (a Hook) measuring the forgetting curve: after_step returns {key: L_src} every
    `every` steps, else nothing. Made by source_loss_callback."""

    def __init__(self, source_batches, every=10, key="source_loss"):
        if every < 1:
            raise ValueError(f"source_loss_callback: every must be at least 1, got {every}")
        self.source_batches, self.every, self.key = source_batches, every, key

    def after_step(self, step, model):
        if step % self.every:
            return {}
        return {self.key: source_loss(model, self.source_batches)}


def source_loss_callback(source_batches, every=10, key="source_loss"):
    """A finetune callback that measures the forgetting curve: {key: L_src} every `every` steps, else {}.

    finetune(..., callback=source_loss_callback(batches, every=25)) merges the dict into the history row
    of that step, so history rows with step % every == 0 carry "source_loss" (learning_forgetting_curve
    reads them). Costs one forward pass over source_batches per measurement.
    """
    return SourceLossCurve(source_batches, every, key)


def forgetting(before, after):
    """forgetting = L_src(after) - L_src(before): > 0 means the model got worse on the source data."""
    return float(after) - float(before)


def target_gain(before, after, higher_is_better):
    """target gain = (after - before) if higher_is_better else (before - after): > 0 means it learned the task."""
    return float(after) - float(before) if higher_is_better else float(before) - float(after)


def learning_forgetting_curve(history, source_before, target_before, metric, higher_is_better,
                              source_key="source_loss"):
    """The learning-versus-forgetting path of ONE run: a point wherever a history row has both measurements.

    Each point: {"step", "target_gain": gain of the validation metric f"val_{metric}" so far,
    "forgetting": source_key - source_before}. Step 0 (before fine-tuning) is the origin (0, 0).
    Give the callback and the evaluation the same period (every == eval_every) so their rows coincide.
    """
    points = [{"step": 0, "target_gain": 0.0, "forgetting": 0.0}]
    for row in history:
        if source_key in row and f"val_{metric}" in row:
            points.append({"step": row["step"],
                           "target_gain": target_gain(target_before, row[f"val_{metric}"], higher_is_better),
                           "forgetting": forgetting(source_before, row[source_key])})
    return points


def pareto_front(points, gain_key="target_gain", forgetting_key="forgetting"):
    """Flags: True for each point no other point beats, ACROSS runs (more gain and less forgetting).

    Point q dominates p when gain_q >= gain_p and forgetting_q <= forgetting_p, one of them strictly.
    The Pareto-optimal points are those no point dominates: the best trade-offs on offer.
    """
    g = np.array([float(p[gain_key]) for p in points])
    f = np.array([float(p[forgetting_key]) for p in points])
    flags = []
    for i in range(len(points)):
        dominated = (g >= g[i]) & (f <= f[i]) & ((g > g[i]) | (f < f[i]))
        flags.append(not bool(dominated.any()))
    return flags


# ----------------------------------------------------------------------------------------------------
# 2. A sequence of tasks: the matrix R[i, j] = performance on task j after training stage i
# ----------------------------------------------------------------------------------------------------
# Rows are training stages 0..T-1 (stage i trained on task i), columns are the tasks 0..T-1, 0-indexed.
# R holds accuracies (higher_is_better=True) or losses (False); for losses the differences are negated so
# that the sign rule of the top of this file holds: transfer > 0 is good, the forgetting measure > 0 is bad.


def _check_matrix(R, min_tasks=1):
    R = np.asarray(R, dtype=np.float64)
    if R.ndim != 2 or R.shape[0] != R.shape[1]:
        raise ValueError(f"R must be a square matrix (stages x tasks), got shape {R.shape}")
    if R.shape[0] < min_tasks:
        raise ValueError(f"this measure needs at least {min_tasks} tasks, R has {R.shape[0]}")
    return R


def average_accuracy(R):
    """ACC = (1/T) * sum_j R[T-1, j]: mean performance on every task after the last stage (Lopez-Paz & Ranzato 2017)."""
    R = _check_matrix(R)
    return float(R[-1].mean())


def backward_transfer(R, higher_is_better=True):
    """BWT = 1/(T-1) * sum_{j < T-1} (R[T-1, j] - R[j, j])   (Lopez-Paz & Ranzato 2017, GEM, eq. 3)

    How much learning the later tasks changed each earlier task, measured from just after it was learned.
    < 0 is forgetting. For a loss matrix (higher_is_better=False) the sign is flipped: R[j, j] - R[T-1, j].
    """
    R = _check_matrix(R, 2)
    T, s = R.shape[0], 1.0 if higher_is_better else -1.0
    return float(np.mean([s * (R[T - 1, j] - R[j, j]) for j in range(T - 1)]))


def forward_transfer(R, baseline, higher_is_better=True):
    """FWT = 1/(T-1) * sum_{j >= 1} (R[j-1, j] - b_j)   (Lopez-Paz & Ranzato 2017, eq. 4)

    How much training on tasks 0..j-1 helps task j before it is trained on, against b_j, the performance
    on task j of the model before any stage (e.g. at random init, or the pretrained model). > 0 helps.
    baseline: length T (b_0 is unused). Loss matrix: the sign is flipped, b_j - R[j-1, j].
    """
    R = _check_matrix(R, 2)
    b = np.asarray(baseline, dtype=np.float64)
    T, s = R.shape[0], 1.0 if higher_is_better else -1.0
    if b.shape != (T,):
        raise ValueError(f"baseline must hold one value per task, shape ({T},), got {b.shape}")
    return float(np.mean([s * (R[j - 1, j] - b[j]) for j in range(1, T)]))


def forgetting_measure(R, higher_is_better=True):
    """F = 1/(T-1) * sum_{j < T-1} max_{l < T-1} (R[l, j] - R[T-1, j])   (Chaudhry et al. 2018, RWalk, eq. 9)

    For each earlier task, the drop from the best it ever was (at any stage before the last) to now.
    > 0 is forgetting. Loss matrix: the best is the lowest loss, so F_j = R[T-1, j] - min_{l < T-1} R[l, j].
    """
    R = _check_matrix(R, 2)
    T, s = R.shape[0], 1.0 if higher_is_better else -1.0
    return float(np.mean([np.max(s * (R[:T - 1, j] - R[T - 1, j])) for j in range(T - 1)]))


# ----------------------------------------------------------------------------------------------------
# 3. Where the change went: weight drift per layer, and the rank of each weight change
# ----------------------------------------------------------------------------------------------------


def effective_state(model):
    """{name: array} of the weights the model actually computes with: a LoRA layer's weight is W + (alpha/r) B A
    (the lora_A / lora_B entries are dropped), so a LoRA model compares name by name with its base."""
    out = {}
    lora = {f"{name}.weight": m for name, m in model.named_modules() if isinstance(m, LoRALinear)}
    for name, p in model.named_parameters(remove_duplicate=False):
        if is_lora_parameter(name):
            continue
        array = p.data.copy()
        if name in lora and not lora[name].merged:
            array = array + lora[name].delta_weight().astype(array.dtype)
        out[name] = array
    return out


def weight_drift(pre_state, post_state):
    """drift(name) = ||theta - theta_0|| / ||theta_0|| (Frobenius norms) for each name in both dicts.

    pre_state: the pretrained weights (model.state_dict()); post_state: the fine-tuned ones (use
    effective_state(model) for a LoRA model). 0 = untouched. A name whose theta_0 is all zeros gets
    inf if it moved, else 0.
    """
    out = {}
    for name in pre_state:
        if name not in post_state:
            continue
        a = np.asarray(pre_state[name], dtype=np.float64)
        b = np.asarray(post_state[name], dtype=np.float64)
        if a.shape != b.shape:
            raise ValueError(f"weight_drift: {name} has shape {a.shape} before but {b.shape} after")
        change, size = float(np.linalg.norm(b - a)), float(np.linalg.norm(a))
        out[name] = change / size if size > 0 else (math.inf if change > 0 else 0.0)
    return out


def total_weight_drift(pre_state, post_state, untied=False):
    """||theta - theta_0|| / ||theta_0|| over all weights at once, each parameter counted once: the tied
    lm_head.weight (the same matrix as wte) is left out unless the fine-tuned head was untied."""
    names = [n for n in pre_state if n in post_state and (untied or n != "lm_head.weight")]
    change = sum(float(np.sum((np.asarray(post_state[n], np.float64) - pre_state[n]) ** 2)) for n in names)
    size = sum(float(np.sum(np.asarray(pre_state[n], np.float64) ** 2)) for n in names)
    return math.sqrt(change / size) if size > 0 else 0.0


def effective_rank(delta):
    """erank(delta) = exp(H(p)),  p_k = sigma_k / sum_i sigma_i,  H(p) = -sum_k p_k log p_k   (Roy & Vetterli 2007)

    sigma are the singular values of the 2-D matrix delta. A rank-r matrix with r equal singular values
    has erank r; unequal ones give less; it is never more than the rank. 0 for an all-zero matrix.
    """
    delta = np.asarray(delta, dtype=np.float64)
    if delta.ndim != 2:
        raise ValueError(f"effective_rank: needs a 2-D matrix, got shape {delta.shape}")
    sigma = np.linalg.svd(delta, compute_uv=False)
    total = sigma.sum()
    if total <= 0:
        return 0.0
    p = sigma[sigma > 0] / total
    return float(np.exp(-(p * np.log(p)).sum()))


def delta_effective_ranks(pre_state, post_state, names=None):
    """{name: effective_rank(post - pre)} for every 2-D weight in both dicts (or `names`), with the
    matrix's full rank min(out, in) beside it: {name: (erank, full_rank)}."""
    out = {}
    for name in names or pre_state:
        if name in post_state and np.ndim(pre_state[name]) == 2:
            delta = np.asarray(post_state[name], np.float64) - np.asarray(pre_state[name], np.float64)
            out[name] = (effective_rank(delta), min(delta.shape))
    return out


# ----------------------------------------------------------------------------------------------------
# 4. Mitigations during fine-tuning: finetune.Hook subclasses (Replay mixes the batch; EWC, L2SP add a penalty)
# ----------------------------------------------------------------------------------------------------


class Replay(Hook):
    """Rehearse the source: round(fraction * B) rows of each fine-tuning step come from the source text.

    n = floor(fraction * B + 1/2) rows of the batch of B. The source then weighs n : (B - n) against the task,
    row for row, whatever the task:
      language modelling (every target counted: y >= 0 everywhere): mix_batch keeps the first B - n task rows
          and puts n random source windows (data.get_batch, with the loop's rng) in the last n rows. Every row
          counts T targets, so the mean over tokens is already a mean over rows.
      prompt tasks (kind, order, describe: a row counts only its answer, ONE token for a class label):
          replacing rows would weigh the target by its tokens, ~1 in 100 next to a window of source text
          (a quarter of the rows would be ~97% of the loss). So mix_batch keeps the first B - n task rows
          and draws nothing; penalty(model) then draws n source windows of the model's block_size (the same
          rng, right after the forward) and returns (n / (B - n)) * their mean loss, through the language
          model inside (gpt_of: a ClassifierModel's body and tied head). The objective is
              L_task(B - n rows) + n / (B - n) * L_source(n rows) = B / (B - n) * (per-row mean over B rows),
          the per-row mean scaled by B / (B - n) (4/3 at fraction 0.25): what a mixed LM batch weighs, up to
          that constant. A fraction that leaves no task row raises ValueError.
    With n = 0 the batch is returned untouched and the rng is NOT drawn from, so fraction = 0 is plain
    fine-tuning, bit for bit. Cost: none beyond the data for LM tasks; for prompt tasks the n source rows are
    whole windows (longer than a task row), so a step costs more.
    block_size: the source window length; None means the task batch's T (LM) or the model's block_size.
    """

    def __init__(self, source_ids, fraction, block_size=None):
        if not 0.0 <= float(fraction) <= 1.0:
            raise ValueError(f"Replay: fraction must lie in [0, 1] (share of each batch from the source), got {fraction!r}")
        self.source_ids = np.asarray(source_ids)
        self.fraction = float(fraction)
        self.block_size = block_size
        self._pending = None  # prompt tasks: (source rows, task rows, rng) between mix_batch and penalty

    def rows(self, batch_size):
        return int(math.floor(self.fraction * batch_size + 0.5))

    def mix_batch(self, x, y, rng):
        n = self.rows(len(x))
        self._pending = None
        if n == 0:
            return x, y  # no rng draw: plain fine-tuning
        T = x.shape[1]
        if (np.asarray(y) >= 0).all():  # language modelling: every row counts T targets
            if self.block_size is not None and self.block_size != T:
                raise ValueError(f"Replay: block_size {self.block_size} differs from the task batch's T={T}")
            sx, sy = data.get_batch(self.source_ids, n, T, rng)  # (n, T) each
            x, y = x.copy(), y.copy()
            x[len(x) - n:], y[len(y) - n:] = sx, sy
            return x, y
        if n >= len(x):  # a prompt task: its rows count one answer, so the source is weighed in penalty()
            raise ValueError(f"Replay: fraction {self.fraction} leaves no task row in a batch of {len(x)} of a "
                             "prompt task (classification or instruction: a row counts only its answer); "
                             "use a fraction that keeps at least one task row")
        self._pending = (n, len(x) - n, rng)
        return x[:len(x) - n], y[:len(y) - n]  # (B - n, T) each

    def penalty(self, model):
        """Prompt tasks: n / (B - n) times the language-model loss on n source windows (None otherwise)."""
        if self._pending is None:
            return None
        n, kept, rng = self._pending
        self._pending = None
        gpt = gpt_of(model)  # the language model, also inside a ClassifierModel
        T = self.block_size or min(gpt.config.block_size, len(self.source_ids) - 1)
        sx, sy = data.get_batch(self.source_ids, n, T, rng)  # (n, T) each
        _, loss = gpt(sx, sy)  # mean over the n * T source targets
        return loss * (n / kept)

    def __repr__(self):
        return f"Replay(fraction={self.fraction})"


def _anchor_name(name, anchors):
    """The anchor a current parameter name refers to ("gpt." of a ClassifierModel stripped)."""
    if name in anchors:
        return name
    if name.startswith("gpt.") and name[4:] in anchors:
        return name[4:]
    return None


def _penalized_tensors(model, anchors):
    """(anchor name, Tensor) pairs to penalize: each trainable parameter the anchors know, and for a LoRA
    layer its effective weight W + (alpha/r) B A, built from engine ops so the penalty reaches A and B.
    Frozen parameters are left out: they still equal their anchor, so their term is 0 with no gradient."""
    lora = {f"{name}.weight": m for name, m in model.named_modules() if isinstance(m, LoRALinear)}
    out = []
    for name, p in model.named_parameters():  # a tied parameter once (wte and lm_head are one)
        key = _anchor_name(name, anchors)
        if key is None:
            continue  # a new parameter (a classifier head, LoRA's A and B themselves): no anchor
        if name in lora and not lora[name].merged:
            m = lora[name]
            if m.lora_A.requires_grad or m.lora_B.requires_grad or p.requires_grad:
                out.append((key, p + (m.lora_B @ m.lora_A) * m.scaling))  # (out, in)
        elif p.requires_grad:
            out.append((key, p))
    return out


def fisher_diagonal(model, batches):
    """The diagonal of the empirical Fisher information on source data, one array per parameter name.

        F_i = (1/N) * sum_{n=1..N} ( d ell_n / d theta_i )^2,
        ell_n(theta) = (1/|C_n|) * sum_{t in C_n} log p_theta(y[n,t] | x[n, :t+1])

    One example n is one sequence (one row of a batch); C_n are its counted positions (y != -1), so ell_n
    is the sequence's mean log-likelihood per token, the negative of model(x[n:n+1], y[n:n+1]).loss.
    "Empirical": the labels are the data's next tokens, not samples from the model. N is the number of
    rows with at least one counted position, over all batches. Each row gets its own backward pass:
    squaring a batch gradient would give the square of a mean, not the mean of the squares. Eval mode
    (dropout off); every parameter gets an entry (frozen ones too: their requires_grad is set on and
    restored), a tied parameter under each of its names. The model's .grad are left cleared.
    """
    params = list(model.named_parameters(remove_duplicate=False))
    flags = {id(p): p.requires_grad for _, p in params}
    was_training = model.training
    sums = {id(p): np.zeros(p.shape, dtype=np.float64) for _, p in params}
    n = 0
    model.eval()
    try:
        for _, p in params:
            p.requires_grad_(True)
        for x, y in batches:
            x, y = np.asarray(x), np.asarray(y)
            for row in range(len(x)):
                if not (y[row] != -1).any():
                    continue  # nothing to predict in this row
                model.zero_grad()
                _, loss = model(x[row:row + 1], y[row:row + 1])  # -ell_n, a scalar
                loss.backward()
                seen = set()
                for _, p in params:
                    if id(p) in seen or p.grad is None:
                        continue
                    seen.add(id(p))
                    sums[id(p)] += p.grad.astype(np.float64) ** 2  # (d ell_n / d theta)^2: the sign drops
                n += 1
    finally:
        model.zero_grad()
        for _, p in params:
            p.requires_grad_(flags[id(p)])
        model.train(was_training)
    if n == 0:
        raise ValueError("fisher_diagonal: the batches hold no counted position (every target is -1)")
    return {name: sums[id(p)] / n for name, p in params}


class EWC(Hook):
    """Elastic weight consolidation (Kirkpatrick et al. 2017): a quadratic pull toward the pretrained
    weights theta*, stronger along directions the source data cares about (large Fisher F):

        penalty(theta) = (lam / 2) * sum_i F_i (theta_i - theta*_i)^2

    theta* and F are taken from `model` when EWC is built (build it BEFORE fine-tuning). F comes from
    fisher_diagonal(model, source_batches) unless `fisher` (a dict name -> array) is given. Cost: one
    forward + backward per source sequence, once; then per step about three elementwise passes over the
    trainable weights, and two stored copies (theta*, F) of the model. A LoRA layer is penalized on its
    effective weight W + (alpha/r) B A; a head untied after EWC was built is pulled toward the tied weights.
    """

    def __init__(self, model, source_batches=None, lam=1.0, fisher=None):
        if not lam >= 0:
            raise ValueError(f"EWC: lam must be >= 0, got {lam!r}")
        if fisher is None and source_batches is None:
            raise ValueError("EWC needs source_batches (to estimate the Fisher) or a precomputed fisher dict")
        self.lam = float(lam)
        self.anchor = {name: p.data.copy() for name, p in model.named_parameters(remove_duplicate=False)}
        self.fisher = fisher if fisher is not None else fisher_diagonal(model, source_batches)
        missing = [name for name in self.anchor if name not in self.fisher]
        if missing:
            raise ValueError(f"EWC: the fisher dict lacks {missing[:4]}")

    def penalty(self, model):
        terms = []
        for name, theta in _penalized_tensors(model, self.anchor):
            diff = theta - self.anchor[name].astype(theta.dtype)  # (same shape as theta)
            terms.append((diff * diff * self.fisher[name].astype(theta.dtype)).sum())
        if not terms:
            return None
        return sum(terms[1:], terms[0]) * (self.lam / 2)

    def __repr__(self):
        return f"EWC(lam={self.lam:g})"


class L2SP(Hook):
    """L2-SP (Li et al. 2018): weight decay toward the pretrained Starting Point instead of toward zero:

        penalty(theta) = (alpha / 2) * sum_i (theta_i - theta0_i)^2 = (alpha / 2) ||theta - theta0||^2

    EWC with F = 1 everywhere. theta0 is copied from `model` when L2SP is built (before fine-tuning).
    New parameters (a classifier head) have no starting point and are not penalized (the paper's beta = 0).
    Cost: one stored copy of the weights, two elementwise passes per step.
    """

    def __init__(self, model, alpha=1.0):
        if not alpha >= 0:
            raise ValueError(f"L2SP: alpha must be >= 0, got {alpha!r}")
        self.alpha = float(alpha)
        self.anchor = {name: p.data.copy() for name, p in model.named_parameters(remove_duplicate=False)}

    def penalty(self, model):
        terms = []
        for name, theta in _penalized_tensors(model, self.anchor):
            diff = theta - self.anchor[name].astype(theta.dtype)
            terms.append((diff * diff).sum())
        if not terms:
            return None
        return sum(terms[1:], terms[0]) * (self.alpha / 2)

    def __repr__(self):
        return f"L2SP(alpha={self.alpha:g})"


# ----------------------------------------------------------------------------------------------------
# 5. WiSE-FT after the fact: interpolate the weights of the pretrained and the fine-tuned model
#    (Wortsman et al. 2022)
# ----------------------------------------------------------------------------------------------------


def wise_ft(pretrained_state, finetuned_state, alpha):
    """theta(alpha) = (1 - alpha) * theta_pretrained + alpha * theta_finetuned, name by name.

    alpha = 0 returns the pretrained weights, alpha = 1 the fine-tuned ones (exactly: those ends are copied,
    not computed). Both dicts must hold the same names and shapes (a LoRA model: merge it first with
    merged_state_dict). A GPT's state_dict always lists lm_head.weight, so a tied pretrained model and a
    fine-tuned model with an untied head interpolate fine; load the result into an untied model
    (untie_head), since its wte and lm_head now differ.
    """
    if not 0.0 <= float(alpha) <= 1.0:
        raise ValueError(f"wise_ft: alpha must lie in [0, 1] (0 = pretrained, 1 = fine-tuned), got {alpha!r}")
    a_names, b_names = set(pretrained_state), set(finetuned_state)
    if a_names != b_names:
        only_a, only_b = sorted(a_names - b_names), sorted(b_names - a_names)
        raise ValueError(f"wise_ft: the two state dicts hold different names; only in pretrained: {only_a[:5]}, "
                         f"only in fine-tuned: {only_b[:5]} (merge LoRA adapters and untie heads first)")
    out = {}
    for name in pretrained_state:
        a, b = np.asarray(pretrained_state[name]), np.asarray(finetuned_state[name])
        if a.shape != b.shape:
            raise ValueError(f"wise_ft: {name} has shape {a.shape} in pretrained but {b.shape} in fine-tuned")
        if alpha == 0:
            out[name] = a.copy()
        elif alpha == 1:
            out[name] = b.copy()
        else:
            out[name] = ((1.0 - alpha) * a.astype(np.float64) + alpha * b.astype(np.float64)).astype(b.dtype)
    return out


def _plain_model_like(model):
    """A plain GPT with `model`'s config (untied if its head is), without moving tinyft's RNG."""
    gpt = gpt_of(model)
    with rng_preserved():
        plain = GPT(gpt.config)
    if getattr(gpt, "head_untied", False):
        untie_head(plain)
    return plain


def wise_ft_sweep(pre_state, model, task, source_batches, alphas=(0.0, 0.25, 0.5, 0.75, 1.0),
                  source_before=None, target_before=None, split="test"):
    """WiSE-FT after the fact: for each alpha, theta(alpha) = (1 - alpha) theta_pre + alpha theta_ft,
    scored on the target task and the source. One row per alpha: alpha, target, source_loss, and (given
    the before values, else from alpha = 0) target_gain and forgetting. Costs evaluations only.

    pre_state: the pretrained GPT's state_dict(); model: the fine-tuned language model (LoRA is merged
    into its weights here via effective_state; an untied head is interpolated from the tied one).
    """
    if isinstance(model, ClassifierModel):
        raise ValueError("wise_ft_sweep: a ClassifierModel has a new head with no pretrained value; "
                         "use a language-model task or the label_tokens classifier")
    ft_state = effective_state(model)
    pre_state = {name: pre_state[name] if name in pre_state else pre_state["transformer.wte.weight"]
                 for name in ft_state}  # an untied lm_head starts from the tied matrix
    eval_model = _plain_model_like(model)
    metric, higher = task.metric, bool(task.higher_is_better)
    rows = []
    for alpha in alphas:
        eval_model.load_state_dict(wise_ft(pre_state, ft_state, float(alpha)))
        target = float(evaluate(eval_model, task, split)[metric])
        src = source_loss(eval_model, source_batches)
        rows.append({"alpha": float(alpha), "target": target, "source_loss": src})
    t0 = target_before if target_before is not None else rows[0]["target"]
    s0 = source_before if source_before is not None else rows[0]["source_loss"]
    for row in rows:
        row["target_gain"] = target_gain(t0, row["target"], higher)
        row["forgetting"] = forgetting(s0, row["source_loss"])
    return rows
