"""Fine-tuning: adapt a pretrained GPT to a small specialized task, seeing exactly what trains, at what cost.

Map of this file:
  1. Strategies       STRATEGIES, apply_strategy(model, name) -> StrategyReport, describe_trainable(model);
                      the tied wte/lm_head and untie_head(model) ("head only" trains the output layer only)
  2. Learning rates   param_groups(model, lr, head_lr, layer_decay): per-group lr, layer-wise lr decay
  3. Classification   ClassifierHead and ClassifierModel: a new head on pooled hidden states
  4. The loop         FinetuneConfig; Hook (mix_batch, penalty, after_step: how forgetting.py's mitigations
                      and callbacks plug in); _training_step (batch -> forward -> loss -> backward -> clip
                      -> step, as pretrain's); finetune(...) -> FinetuneResult (lp_ft: a probe phase, then
                      a full phase); save_finetuned / load_finetuned
LoRA lives in lora.py, WiSE-FT in forgetting.py, the baselines and the cost of a run in baselines.py,
`python -m tinyft finetune` in cli.py.
Papers: BitFit (Ben Zaken et al. 2022), LP-FT (Kumar et al. 2022), discriminative fine-tuning / layer-wise
lr (Howard & Ruder 2018). Lecture note: docs/finetuning.md."""

import dataclasses
import json
import os
import time
from dataclasses import dataclass, field

import numpy as np
from tqdm.auto import tqdm

from . import checkpoint, optim
from . import functional as F
from .autograd import manual_seed, no_grad, rng_preserved
from .lora import (
    LoRAAdapters,
    LoRALinear,
    check_lora_args,
    inject_lora,
    is_lora_parameter,
    lora_layers,
    merged_state_dict,
)
from .nn import GPT, GPTConfig, Linear, Module, Parameter
from .pretrain import check_out_dir, write_history
from .tasks import check_task_vocabulary

STRATEGIES = ("full", "head", "last_k", "embeddings_frozen", "bitfit", "layernorm", "lora", "lp_ft")
# Strategies that train the output layer but not the input embeddings: they untie lm_head from wte.
UNTIE_FOR = ("head", "last_k", "embeddings_frozen", "lp_ft")
CHECKPOINT_NAME = "ckpt.npz"
HISTORY_NAME = "history.jsonl"


def gpt_of(model):
    """The GPT inside `model` (a GPT itself, or a ClassifierModel wrapping one)."""
    return model.gpt if isinstance(model, ClassifierModel) else model


# ----------------------------------------------------------------------------------------------------
# 1. Strategies: which parameters train
# ----------------------------------------------------------------------------------------------------


def untie_head(model):
    """Give lm_head its own copy of the shared (V, C) matrix, so the output layer can train alone.

    A GPT ties lm_head.weight to transformer.wte.weight: ONE Parameter embeds input ids and scores the
    next id. Training "the head" of a tied model would therefore also move every input embedding. We
    untie instead: lm_head.weight becomes a new Parameter holding a copy of the same numbers, so the
    model computes exactly the same function until training changes one of the two. The price is V*C
    more parameters in memory. `model.head_untied = True` records the choice; save_finetuned writes it
    into the checkpoint and load_finetuned unties again before loading, so the weights come back right.
    Calling it twice does nothing the second time.
    """
    gpt = gpt_of(model)
    if getattr(gpt, "head_untied", False):
        return model
    wte = gpt.transformer.wte.weight
    gpt.lm_head.weight = Parameter(wte.data, requires_grad=wte.requires_grad, dtype=None)  # a copy, own storage
    gpt.head_untied = True
    return model


def head_parameters(model):
    """The output layer: a ClassifierModel's new head, else the GPT's lm_head."""
    if isinstance(model, ClassifierModel):
        return list(model.head.parameters())
    return [model.lm_head.weight]


@dataclass
class StrategyReport:
    """Which parameters a strategy trains, counted (a tied Parameter once)."""

    strategy: str
    trainable_params: int
    total_params: int
    trainable_names: list
    head_untied: bool = False
    note: str = ""

    @property
    def fraction(self):
        return self.trainable_params / max(self.total_params, 1)

    def __str__(self):
        text = (f"strategy {self.strategy}: {self.trainable_params:,} of {self.total_params:,} parameters train "
                f"({100 * self.fraction:.2f}%)")
        if self.head_untied:
            text += "; lm_head untied from wte (its own copy)"
        return text + (f"; {self.note}" if self.note else "")


def _check_k(k, n_layer):
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or not 1 <= k <= n_layer:
        raise ValueError(f"k must be an int from 1 to n_layer={n_layer} (the number of last blocks to train), "
                         f"got {k!r}")


def apply_strategy(model, strategy, k=1, lora_rank=8, lora_alpha=16, lora_targets=("c_attn",)):
    """Freeze `model` (a GPT or ClassifierModel) as `strategy` says; returns a StrategyReport.

    full               every parameter
    head               only the output layer (lm_head, untied from wte; or a ClassifierModel's new head)
    last_k             the last k blocks + ln_f + the output layer (untied)
    embeddings_frozen  everything except wte and wpe (lm_head untied so it still trains)
    bitfit             only the biases (Ben Zaken et al. 2022)
    layernorm          only the LayerNorm weights and biases (ln_1, ln_2, ln_f)
    lora               only LoRA's A and B matrices, injected into `lora_targets` (Hu et al. 2021)
    lp_ft              phase 1 of LP-FT: like "head"; finetune() switches to "full" for phase 2
    """
    if strategy not in STRATEGIES:
        raise ValueError(f"unknown strategy {strategy!r}; valid strategies: {', '.join(STRATEGIES)}")
    gpt = gpt_of(model)
    n_layer = gpt.config.n_layer
    if strategy == "last_k":
        _check_k(k, n_layer)
    if strategy == "lora":
        check_lora_args(lora_rank, lora_alpha, lora_targets)
    classifier = isinstance(model, ClassifierModel)
    if strategy in UNTIE_FOR and not classifier:  # a classifier never uses lm_head: nothing to untie
        untie_head(model)
    if strategy == "lora" and not any(isinstance(m, LoRALinear) for m in model.modules()):
        inject_lora(model, lora_rank, lora_alpha, lora_targets)

    model.requires_grad_(False)  # freeze everything, then unfreeze what the strategy trains
    tr = gpt.transformer
    train = []  # modules or parameters to unfreeze
    if strategy == "full":
        train = [model]
    elif strategy in ("head", "lp_ft"):
        train = head_parameters(model)
    elif strategy == "last_k":
        train = [*list(tr.h)[n_layer - k:], tr.ln_f, *head_parameters(model)]
    elif strategy == "embeddings_frozen":
        model.requires_grad_(True)
        tr.wte.weight.requires_grad_(False)
        tr.wpe.weight.requires_grad_(False)
    elif strategy == "bitfit":
        train = [p for name, p in model.named_parameters() if name.endswith(".bias")]
    elif strategy == "layernorm":
        train = [p for name, p in model.named_parameters() if ".ln_" in f".{name}"]
    elif strategy == "lora":
        train = [p for name, p in model.named_parameters() if is_lora_parameter(name)]
    if classifier and strategy in ("last_k", "embeddings_frozen", "full", "bitfit", "layernorm", "lora"):
        train = [*train, *model.head.parameters()]  # a new head always trains: it starts random
        if strategy == "embeddings_frozen":
            model.head.requires_grad_(True)
    for item in train:
        item.requires_grad_(True)

    note = {"lp_ft": "phase 1 (linear probe); phase 2 trains every parameter",
            "lora": f"rank {lora_rank}, alpha {lora_alpha}, targets {', '.join(lora_targets)}"}.get(strategy, "")
    return StrategyReport(strategy=strategy, trainable_params=model.num_parameters(trainable_only=True),
                          total_params=model.num_parameters(),
                          trainable_names=[n for n, p in model.named_parameters() if p.requires_grad],
                          head_untied=getattr(gpt, "head_untied", False), note=note)


def describe_trainable(model):
    """A table (one line per parameter): name, shape, trainable, with totals at the end."""
    rows = [(name, "x".join(map(str, p.shape)), "yes" if p.requires_grad else "-")
            for name, p in model.named_parameters()]
    width = max(len(r[0]) for r in rows)
    lines = [f"{'name':<{width}}  {'shape':>12}  trainable"]
    lines += [f"{name:<{width}}  {shape:>12}  {flag}" for name, shape, flag in rows]
    n, total = model.num_parameters(trainable_only=True), model.num_parameters()
    lines.append(f"{n:,} of {total:,} parameters trainable ({100 * n / max(total, 1):.2f}%)")
    return "\n".join(lines)


# ----------------------------------------------------------------------------------------------------
# 2. Learning rates per group: a body lr, a head lr, and layer-wise decay (Howard & Ruder 2018)
# ----------------------------------------------------------------------------------------------------


def layer_index(name, n_layer):
    """Depth of a parameter: 0 for the embeddings (wte, wpe), i + 1 for block i, n_layer + 1 for ln_f and heads."""
    if name.startswith("transformer.wte") or name.startswith("transformer.wpe") or name.startswith("gpt.transformer.w"):
        return 0
    parts = name.split(".")
    if "h" in parts:
        return int(parts[parts.index("h") + 1]) + 1
    return n_layer + 1


def param_groups(model, lr, head_lr=None, layer_decay=1.0, weight_decay=0.0):
    """Optimizer param groups for the TRAINABLE parameters only (frozen ones never enter the optimizer).

    Each group carries "lr_scale" (optim.set_lr multiplies the scheduled lr by it), so the schedule
    shapes every group alike:
        lr(parameter) = lr * layer_decay ** (n_layer + 1 - layer_index)      (ULMFiT's discriminative lr)
    that is block i gets lr * decay^(n_layer - i), the embeddings the lowest lr * decay^(n_layer + 1),
    ln_f and the head lr itself. head_lr, if given, replaces the output layer's lr (lm_head when untied,
    a classifier head). A tied lm_head IS transformer.wte.weight, listed once as an embedding, so it
    follows the embedding rate. Weight decay goes on 2-D non-embedding matrices only (as pretraining).
    """
    if not layer_decay > 0:
        raise ValueError(f"layer_decay must be > 0 (1.0 = no decay), got {layer_decay!r}")
    if head_lr is not None and not head_lr > 0:
        raise ValueError(f"head_lr must be > 0, got {head_lr!r}")
    n_layer = gpt_of(model).config.n_layer
    head_ids = {id(p) for p in head_parameters(model)} if (
        isinstance(model, ClassifierModel) or getattr(model, "head_untied", False)) else set()
    groups = {}  # (lr_scale, weight_decay) -> group
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        if id(p) in head_ids and head_lr is not None:
            scale = head_lr / lr
        else:
            scale = layer_decay ** (n_layer + 1 - layer_index(name, n_layer))
        is_embedding = layer_index(name, n_layer) == 0
        wd = weight_decay if (p.ndim >= 2 and not is_embedding and id(p) not in head_ids) else 0.0
        group = groups.setdefault((scale, wd), {"params": [], "names": [], "lr_scale": scale, "weight_decay": wd,
                                                "lr": lr * scale})
        group["params"].append(p)
        group["names"].append(name)
    if not groups:
        raise ValueError("no parameter is trainable: apply a strategy that trains something")
    return sorted(groups.values(), key=lambda g: g["lr_scale"])


def learning_rates(optimizer):
    """{parameter name: lr} as the optimizer holds them now (for checks and for the report)."""
    return {name: group["lr"] for group in optimizer.param_groups for name in group.get("names", [])}


# ----------------------------------------------------------------------------------------------------
# 3. Classification through a new head on pooled hidden states
# ----------------------------------------------------------------------------------------------------


class ClassifierHead(Module):
    """logits = pool(h) W^T + b, with h (B, T, C) the GPT's final hidden states and W (n_classes, C).

    pooling="mean" averages the positions 0..end of each row (a better sentence feature for a character
    model than one position); "last" reads position `end` alone. `end` (B,) marks each row's last input token.
    """

    def __init__(self, n_embd, n_classes, pooling="mean"):
        super().__init__()
        if pooling not in ("mean", "last"):
            raise ValueError(f"pooling must be 'mean' or 'last', got {pooling!r}")
        self.pooling = pooling
        self.proj = Linear(n_embd, n_classes)

    def forward(self, h, end):  # h (B, T, C), end (B,) int
        B, T, C = h.shape
        positions = np.arange(T)[None, :]  # (1, T)
        if self.pooling == "last":
            weights = (positions == end[:, None]).astype(h.dtype)  # (B, T) one-hot
        else:
            weights = (positions <= end[:, None]).astype(h.dtype)
            weights /= weights.sum(axis=1, keepdims=True)  # (B, T), rows sum to 1
        pooled = (h * weights[:, :, None]).sum(axis=1)  # (B, C)
        return self.proj(pooled)  # (B, n_classes)


class ClassifierModel(Module):
    """A GPT body plus a ClassifierHead. forward(x, y) reads the class from y, the task's LM targets:
    in each row the one counted position (y != -1) is where the label token would be predicted, so its
    target is the label token (its class = index in label_ids) and the position itself is the input's end."""

    def __init__(self, gpt, label_ids, pooling="mean"):
        super().__init__()
        self.gpt = gpt
        self.config = gpt.config
        self.label_ids = np.asarray(label_ids, dtype=np.int64)
        self.head = ClassifierHead(gpt.config.n_embd, len(self.label_ids), pooling)

    def classes_and_ends(self, y):
        y = np.asarray(y)
        counted = y != -1  # (B, T)
        if not counted.any(axis=1).all():
            raise ValueError("ClassifierModel: every row of y needs one counted position (the label)")
        end = counted.shape[1] - 1 - np.argmax(counted[:, ::-1], axis=1)  # (B,) last counted position
        label_token = y[np.arange(len(y)), end]  # (B,)
        lookup = {int(t): i for i, t in enumerate(self.label_ids)}
        classes = np.array([lookup.get(int(t), -1) for t in label_token], dtype=np.int64)
        if (classes < 0).any():
            raise ValueError("ClassifierModel: a target at the label position is not one of the task's label_ids")
        return classes, end

    def forward(self, idx, targets=None):
        """(class logits (B, n_classes), mean cross-entropy over the batch or None)."""
        if targets is None:
            raise ValueError("ClassifierModel needs targets (the task's y) to find where each input ends")
        classes, end = self.classes_and_ends(targets)
        h = self.gpt.hidden_states(idx)  # (B, T, C) after ln_f: what lm_head would read
        logits = self.head(h, end)  # (B, n_classes)
        return logits, F.cross_entropy(logits, classes)

    @no_grad()
    def accuracy(self, x, y):
        logits, _ = self(x, y)
        classes, _ = self.classes_and_ends(y)
        return float((logits.data.argmax(axis=1) == classes).mean())


# ----------------------------------------------------------------------------------------------------
# 4. The loop
# ----------------------------------------------------------------------------------------------------

SPLITS = ("val", "test", "shifted")


@dataclass
class FinetuneConfig:
    """What to fine-tune, how, and on what data. A fine-tuned checkpoint records all of it."""

    task: str | None = None  # the task's name: finetune() fills it from the Task itself (task.name)
    strategy: str = "full"  # one of STRATEGIES
    lr: float = 1e-3  # peak lr of the body (the schedule: linear warmup, cosine down to lr / 10)
    head_lr: float | None = None  # lr of the output layer (untied lm_head or classifier head); None = lr
    layer_decay: float = 1.0  # block i gets lr * layer_decay ** (n_layer - i); 1.0 = the same lr everywhere
    steps: int = 200
    batch_size: int = 16
    n_examples: int = 1000  # training examples the task builds (its size knob)
    warmup_steps: int = 20
    weight_decay: float = 0.0
    grad_clip: float = 1.0
    eval_every: int = 50
    k: int = 1  # last_k: how many blocks train
    lora_rank: int = 8
    lora_alpha: float = 16
    lora_targets: tuple = ("c_attn",)
    lora_save: str = "adapter"  # LoRA checkpoint: "adapter" (A and B alone) or "merged" (a plain GPT)
    lp_steps: int = 50  # lp_ft: steps of the linear-probe phase (then `steps` of full fine-tuning)
    classifier: str = "label_tokens"  # classification: "label_tokens" (score label ids) or "head" (new head)
    pooling: str = "mean"  # classifier head input: "mean" over the input's positions, or "last"
    label_noise: float = 0.0  # task knob: fraction of training labels replaced at random
    imbalance: float = 1.0  # task knob: train count of the majority class / the minority class (1 = balanced)
    seed: int = 0
    out: str | None = "runs/finetune"  # folder for ckpt.npz and history.jsonl; None = save nothing

    def validate(self):
        if self.strategy not in STRATEGIES:
            raise ValueError(f"unknown strategy {self.strategy!r}; valid strategies: {', '.join(STRATEGIES)}")
        for name in ("batch_size", "eval_every", "n_examples"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}")
        for name in ("steps", "warmup_steps", "lp_steps"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        if not self.lr > 0 or not self.grad_clip > 0 or self.weight_decay < 0:
            raise ValueError(f"need lr > 0, grad_clip > 0, weight_decay >= 0; got {self.lr}, {self.grad_clip}, "
                             f"{self.weight_decay}")
        if self.classifier not in ("label_tokens", "head"):
            raise ValueError(f"classifier must be 'label_tokens' or 'head', got {self.classifier!r}")
        if self.lora_save not in ("adapter", "merged"):
            raise ValueError(f"lora_save must be 'adapter' or 'merged', got {self.lora_save!r}")
        if self.strategy == "lora":
            check_lora_args(self.lora_rank, self.lora_alpha, self.lora_targets)


@dataclass
class FinetuneResult:
    model: Module
    history: list  # one dict per step: step, phase, train_loss, lr, grad_norm, time_s (+ val metric, after_step keys)
    before: dict  # split -> the task's evaluation dict, before fine-tuning
    after: dict  # split -> the task's evaluation dict, after
    metric: str  # the key of the task's metric in those dicts (e.g. "loss", "accuracy")
    higher_is_better: bool
    report: StrategyReport
    cost: dict
    wall_s: float
    checkpoint: str | None = None
    interrupted: bool = False
    probed_head: np.ndarray | None = None  # lp_ft: the output layer's weight at the end of the probe phase
    optimizer: object = None  # the AdamW of the last phase (it holds only trainable parameters)

    def summary(self):
        """The JSON-able facts of the run (what `--json` prints). target_* = the metric on the test split."""
        m = self.metric
        return {
            "strategy": self.report.strategy,
            "trainable_params": self.cost["trainable_params"],  # lp_ft: phase 2's (every parameter)
            "total_params": self.report.total_params,
            "trainable_fraction": round(self.cost["trainable_params"] / max(self.report.total_params, 1), 6),
            "metric": m,
            "higher_is_better": self.higher_is_better,
            "target_before": _round(self.before["test"].get(m)),
            "target_after": _round(self.after["test"].get(m)),
            "val_before": _round(self.before["val"].get(m)),
            "val_after": _round(self.after["val"].get(m)),
            "shifted_before": _round(self.before.get("shifted", {}).get(m)),
            "shifted_after": _round(self.after.get("shifted", {}).get(m)),
            "steps": len(self.history),
            "optimizer_state_bytes": self.cost["optimizer_state_bytes"],
            "flops": self.cost["flops"],
            "wall_s": round(self.wall_s, 2),
            "checkpoint": self.checkpoint,
            "interrupted": self.interrupted,
        }


def _round(value, digits=4):
    return None if value is None else round(float(value), digits)


def _named_after(config, task):
    """config with config.task = the task's own name (a config naming another task is a ValueError)."""
    name = getattr(task, "name", None)
    if config.task is not None and name is not None and config.task != name:
        raise ValueError(f"config.task is {config.task!r} but the task is {name!r}; leave config.task out "
                         "(finetune records the task's own name)")
    return dataclasses.replace(config, task=name if name is not None else config.task)


def eval_splits(task):
    """The splits finetune measures: val, test, and shifted unless the task has none (task.shifted is None)."""
    return tuple(s for s in SPLITS if not (hasattr(task, s) and getattr(task, s) is None))


def check_model_fits_task(model, task):
    """ValueError unless the model's vocabulary and context length fit the task's data, and the task's
    tokenizer covers its text (tasks.check_task_vocabulary: also for a Task built by hand)."""
    gpt = gpt_of(model)
    tok = getattr(task, "tokenizer", None)
    if tok is not None and tok.vocab_size != gpt.config.vocab_size:
        raise ValueError(f"the checkpoint's vocabulary has {gpt.config.vocab_size} ids but task {task.name!r} is "
                         f"tokenized with {tok.vocab_size}; build the task with the checkpoint's tokenizer")
    block = getattr(task, "block_size", None)
    if block is not None and block > gpt.config.block_size:
        raise ValueError(f"task {task.name!r} uses {block}-token windows but the checkpoint's block_size is "
                         f"{gpt.config.block_size}; build the task with block_size <= {gpt.config.block_size}")
    check_task_vocabulary(task)


@no_grad()
def evaluate(model, task, split, decode=True):
    """The task's evaluation dict on `split`, in eval mode. A ClassifierModel is scored by its own head.

    decode=False skips an instruction task's greedy decoding (exact match): the loop's periodic evaluation
    uses it when the metric is the answer loss.
    """
    was_training = model.training
    model.eval()
    try:
        if isinstance(model, ClassifierModel):
            return _evaluate_classifier(model, task, split)
        if getattr(task, "task_type", None) == "instruction" and not decode:
            return task.evaluate(model, split, decode=False)
        return task.evaluate(model, split)
    finally:
        model.train(was_training)


def _evaluate_classifier(model, task, split, batch_size=64):
    """Accuracy and loss of a ClassifierModel over every example of `split` (task.eval_arrays)."""
    x_all, y_all = task.eval_arrays(split)  # (N, T) each, one row per example
    correct, loss_sum = 0, 0.0
    for i in range(0, len(x_all), batch_size):
        x, y = x_all[i:i + batch_size], y_all[i:i + batch_size]
        logits, loss = model(x, y)
        classes, _ = model.classes_and_ends(y)
        correct += int((logits.data.argmax(axis=1) == classes).sum())
        loss_sum += loss.item() * len(x)
    return {"accuracy": correct / len(x_all), "loss": loss_sum / len(x_all), "n": len(x_all)}


def task_metric(result, task):
    """The task's own metric (task.metric, e.g. "loss" or "accuracy") from an evaluation dict, as a float."""
    return float(result[task.metric])


class Hook:
    """The one protocol finetune() calls its mitigations and callbacks through; each default does nothing.

    Every step calls the hooks (mitigations first, in the order given, then the callback) at three points:
        x, y = hook.mix_batch(x, y, rng)      after the batch is drawn: change its rows (forgetting.Replay)
        term = hook.penalty(model)            after the forward: a scalar Tensor added to the loss, or None
                                              (forgetting.EWC, forgetting.L2SP)
        extra = hook.after_step(step, model)  after the step and the periodic evaluation: a dict merged into
                                              the history row, or None (forgetting.source_loss_callback)
    Subclass it and override what you need. rng is the loop's Generator (draw from it and the run stays
    reproducible for its seed); step counts from 1 across both phases of lp_ft.
    """

    def mix_batch(self, x, y, rng):  # x, y: (B, T) int64
        return x, y

    def penalty(self, model):
        return None

    def after_step(self, step, model):
        return None


class StepCallback(Hook):
    """A plain function fn(step, model) -> dict | None as a Hook's after_step (finetune wraps callback=fn so)."""

    def __init__(self, fn):
        if not callable(fn):
            raise ValueError(f"callback must be a finetune.Hook or a function (step, model) -> dict, got {fn!r}")
        self.fn = fn

    def after_step(self, step, model):
        return self.fn(step, model)


def _hooks(mitigations, callback):
    """The run's hooks in calling order: the mitigations, then the callback (a plain function is wrapped)."""
    for hook in mitigations:
        if not isinstance(hook, Hook):
            raise ValueError(f"mitigations: each must be a finetune.Hook (e.g. forgetting.Replay, EWC, L2SP), "
                             f"got {type(hook).__name__}")
    if callback is None:
        return list(mitigations)
    return [*mitigations, callback if isinstance(callback, Hook) else StepCallback(callback)]


def _training_step(model, task, optimizer, params, hooks, batch_rng, batch_size, grad_clip):
    """One step, as pretrain's: batch -> forward -> loss (+ the hooks' penalties) -> backward -> clip -> step.
    Returns the task loss, the summed penalties, the gradient norm before clipping and the batch's tokens."""
    x, y = task.batch("train", batch_size, batch_rng)  # (B, T) int64 each
    for hook in hooks:
        x, y = hook.mix_batch(x, y, batch_rng)  # replay: source-domain rows into the batch
    _, loss = model(x, y)  # forward; loss = mean cross-entropy over counted positions
    objective, penalty_total = loss, 0.0
    for hook in hooks:
        penalty = hook.penalty(model)  # EWC / L2-SP: a pull toward the pretrained weights
        if penalty is not None:
            objective = objective + penalty
            penalty_total += penalty.item()
    optimizer.zero_grad()
    objective.backward()  # backward: gradients reach only parameters with requires_grad
    grad_norm = optim.clip_grad_norm(params, grad_clip)  # clip
    optimizer.step()  # step: frozen parameters are not in the optimizer at all
    return loss.item(), penalty_total, grad_norm, x.size


@dataclass
class _Run:
    """One fine-tuning run as the loop sees it: what it trains and how, and what it has done so far."""

    model: Module
    task: object
    config: FinetuneConfig
    hooks: list
    batch_rng: np.random.Generator  # draws the training examples (and replay's mix)
    bar: object  # the tqdm progress bar
    total_steps: int
    record_penalty: bool  # a "penalty" column in the history (when mitigations were given)
    history: list = field(default_factory=list)
    step: int = 0
    train_seconds: float = 0.0
    tokens: int = 0


def _optimizer(model, config):
    """AdamW over the trainable parameters only, in param_groups (per-group lr scales)."""
    groups = param_groups(model, config.lr, config.head_lr, config.layer_decay, config.weight_decay)
    return optim.AdamW(groups, lr=config.lr, betas=(0.9, 0.95))


def _run_phase(run, phase, steps, optimizer):
    """`steps` optimizer steps under their own warmup + cosine schedule; one history row per step."""
    config, model, task = run.config, run.model, run.task
    params = [p for g in optimizer.param_groups for p in g["params"]]
    warmup = min(config.warmup_steps, steps)
    val_key = f"val_{task.metric}"
    for phase_step in range(steps):
        t0 = time.perf_counter()
        lr = optim.cosine_schedule(phase_step, config.lr, warmup, steps, config.lr / 10)
        optim.set_lr(optimizer, lr)  # schedule (each group: lr * its lr_scale)
        loss, penalty, grad_norm, tokens = _training_step(model, task, optimizer, params, run.hooks, run.batch_rng,
                                                          config.batch_size, config.grad_clip)
        run.step += 1
        dt = time.perf_counter() - t0
        run.train_seconds += dt
        run.tokens += tokens
        row = {"step": run.step, "phase": phase, "train_loss": loss, "lr": lr, "grad_norm": grad_norm,
               "time_s": run.train_seconds}
        if run.record_penalty:
            row["penalty"] = penalty
        if run.step % config.eval_every == 0 or run.step == run.total_steps:  # evaluate
            row[val_key] = task_metric(evaluate(model, task, "val", decode=task.metric == "exact_match"), task)
        for hook in run.hooks:
            row.update(hook.after_step(run.step, model) or {})
        run.history.append(row)
        postfix = {"loss": f"{loss:.3f}", "lr": f"{lr:.1e}"}
        if val_key in row:
            postfix["val"] = f"{row[val_key]:.3f}"
        run.bar.set_postfix(postfix)
        run.bar.update(1)


def finetune(model, task, config=None, *, mitigations=(), callback=None, progress=True, log=print,
             base_checkpoint=None, tokenizer=None):
    """Fine-tune `model` (a pretrained GPT, changed in place) on `task` as `config` says; returns FinetuneResult.

    Each step (_training_step, the same loop as pretrain's):
        schedule -> batch (then each hook's mix_batch) -> forward -> loss (+ each hook's penalty)
        -> backward -> clip -> optimizer step -> (every eval_every) validation metric -> each hook's after_step
    mitigations: Hook objects (forgetting.Replay, EWC, L2SP); callback: a Hook, or a function
    (step, model) -> dict merged into the history row. Hook says what is called when.
    lp_ft runs two phases (Kumar et al. 2022): the output layer alone for lp_steps ("probe"), then every
    parameter for `steps` ("full"), from the probed head, each with its own optimizer and schedule.
    With a classification task and config.classifier == "head" the model is wrapped in a ClassifierModel.
    """
    config = _named_after(config or FinetuneConfig(), task)
    config.validate()
    check_model_fits_task(model, task)
    splits = eval_splits(task)
    hooks = _hooks(mitigations, callback)
    t_start = time.perf_counter()
    manual_seed(config.seed)  # LoRA's A and a classifier head draw their initial values from it
    if getattr(task, "task_type", None) == "classification" and config.classifier == "head":
        model = ClassifierModel(model, task.label_ids, config.pooling)
    report = apply_strategy(model, config.strategy, k=config.k, lora_rank=config.lora_rank,
                            lora_alpha=config.lora_alpha, lora_targets=config.lora_targets)
    log(str(report))
    before = {split: evaluate(model, task, split) for split in splits}
    log(f"before: {task.metric} " + ", ".join(f"{s} {task_metric(before[s], task):.4f}" for s in splits))

    lp_ft = config.strategy == "lp_ft"
    total_steps = config.lp_steps + config.steps if lp_ft else config.steps
    bar = tqdm(total=total_steps, disable=not progress, desc=f"finetune {config.strategy}", unit="step")
    run = _Run(model, task, config, hooks, np.random.default_rng(config.seed), bar, total_steps, bool(mitigations))
    optimizer, probed_head, interrupted = None, None, False
    try:
        if lp_ft:  # phase 1, the linear probe: apply_strategy left only the output layer trainable
            optimizer = _optimizer(model, config)
            _run_phase(run, "probe", config.lp_steps, optimizer)
            probed_head = np.concatenate([p.data.ravel() for p in head_parameters(model)]).copy()
            apply_strategy(model, "full")  # phase 2: every parameter trains, starting from the probed head
        optimizer = _optimizer(model, config)
        _run_phase(run, "full" if lp_ft else config.strategy, config.steps, optimizer)
    except KeyboardInterrupt:
        interrupted = True
        log(f"interrupted at step {run.step}; evaluating and saving what was trained so far")
    finally:
        bar.close()

    after = {split: evaluate(model, task, split) for split in splits}
    log(f"after:  {task.metric} " + ", ".join(f"{s} {task_metric(after[s], task):.4f}" for s in splits))
    wall_s = time.perf_counter() - t_start
    if lp_ft:
        report = dataclasses.replace(report, note=f"{report.note}; {report.trainable_params:,} params in the probe "
                                     f"phase, {model.num_parameters(trainable_only=True):,} in phase 2")
    from .baselines import phase_tokens, run_cost  # baselines.py imports this file: import at call time

    cost = run_cost(model, run.tokens, wall_s, trainable_params=None if lp_ft else report.trainable_params,
                    phases=phase_tokens(run.history, run.tokens) if lp_ft else None)
    result = FinetuneResult(model=model, history=run.history, before=before, after=after, metric=task.metric,
                            higher_is_better=bool(task.higher_is_better), report=report, cost=cost,
                            wall_s=wall_s, interrupted=interrupted, probed_head=probed_head,
                            optimizer=optimizer if total_steps else None)
    if config.out:
        result.checkpoint = _save_run(result, task, config, base_checkpoint, tokenizer, run.step)
    return result


def _save_run(result, task, config, base_checkpoint, tokenizer, step):
    """Write config.out/ckpt.npz (save_finetuned) and history.jsonl; returns the checkpoint's path.

    A LoRA run saves its adapters alone when it knows its base checkpoint (else merged, a plain GPT)."""
    check_out_dir(config.out)
    path = os.path.join(config.out, CHECKPOINT_NAME)
    export = "full"
    if config.strategy == "lora":
        export = config.lora_save if (config.lora_save == "merged" or base_checkpoint) else "merged"
    tokenizer = tokenizer if tokenizer is not None else getattr(task, "tokenizer", None)
    save_finetuned(path, result.model, export=export, tokenizer=tokenizer, config=config,
                   base_checkpoint=base_checkpoint, step=step, history=result.history,
                   summary={k: v for k, v in result.summary().items() if k != "checkpoint"})
    write_history(os.path.join(config.out, HISTORY_NAME), result.history)
    return path


# --- saving and loading a fine-tuned model ----------------------------------------------------------


def save_finetuned(path, model, export="full", tokenizer=None, config=None, base_checkpoint=None, **meta):
    """Save a fine-tuned model; meta["finetune"] records how to rebuild it (load_finetuned reads it).

    export  "full"     every weight (an untied head: both wte and lm_head, different)
            "adapter"  LoRA's A and B alone (kilobytes); loading needs the base checkpoint
            "merged"   LoRA folded into the base weights: a plain GPT checkpoint (checkpoint.load_model reads it
                       when the head is tied)
    """
    gpt = gpt_of(model)
    lora = lora_layers(model)
    if export in ("adapter", "merged") and not lora:
        raise ValueError(f"export={export!r} needs a LoRA model; this one has no LoRALinear layers")
    if export == "adapter" and not base_checkpoint:
        raise ValueError("export='adapter' needs base_checkpoint (the pretrained checkpoint the adapters belong to)")
    info = {
        "strategy": config.strategy if config else None,
        "head_untied": bool(getattr(gpt, "head_untied", False)),
        "lora": ({"rank": lora[0][1].rank, "alpha": lora[0][1].alpha,
                  "targets": sorted({name.split(".h.", 1)[-1].split(".", 1)[1] for name, _ in lora})}
                 if lora and export != "merged" else None),
        "classifier": ({"label_ids": [int(i) for i in model.label_ids], "pooling": model.head.pooling}
                       if isinstance(model, ClassifierModel) else None),
        "export": export,
        "base_checkpoint": os.path.abspath(base_checkpoint) if base_checkpoint else None,
        "config": _jsonable(dataclasses.asdict(config)) if config else None,
    }
    if export == "adapter":
        to_save = LoRAAdapters(model)
    elif export == "merged":
        with rng_preserved():
            to_save = GPT(gpt.config)  # a plain GPT to hold the merged weights
        if info["head_untied"]:
            untie_head(to_save)
        state = merged_state_dict(model)
        if isinstance(model, ClassifierModel):
            to_save = ClassifierModel(to_save, model.label_ids, model.head.pooling)
        to_save.load_state_dict(state)
    else:
        to_save = model
    checkpoint.save(path, to_save, tokenizer=tokenizer, finetune=info, stage="finetune", **meta)


def _jsonable(d):
    return json.loads(json.dumps(d, default=lambda o: list(o) if isinstance(o, (tuple, set)) else str(o)))


def load_finetuned(path, base=None):
    """Rebuild a model saved by save_finetuned (or finetune): untie, wrap, inject LoRA as recorded, then load.

    An adapter checkpoint needs its base: `base` (a path) or the base_checkpoint path recorded in it.
    """
    ckpt = checkpoint.load(path)
    info = ckpt.meta.get("finetune")
    if not isinstance(info, dict):
        raise checkpoint.CheckpointError(f"{path!r} is not a fine-tuned checkpoint (no 'finetune' entry in its "
                                         "meta); use checkpoint.load_model for a pretrained one")
    with rng_preserved():  # building draws weights (and LoRA's A) that the saved ones replace
        if info["export"] == "adapter":
            base = base or info.get("base_checkpoint")
            if not base or not os.path.exists(base):
                raise checkpoint.CheckpointError(f"{path!r} holds LoRA adapters only; its base checkpoint {base!r} "
                                                 "is not there: pass base=PATH")
            model = checkpoint.load_model(base)
        else:
            model = GPT(GPTConfig.from_dict(ckpt.config))
        if info.get("head_untied"):
            untie_head(model)
        if info.get("classifier"):
            model = ClassifierModel(model, info["classifier"]["label_ids"], info["classifier"]["pooling"])
        if info.get("lora"):
            lo = info["lora"]
            inject_lora(model, lo["rank"], lo["alpha"], tuple(lo["targets"]))
    if info["export"] == "adapter":
        params = dict(model.named_parameters())
        missing = [n for n in params if is_lora_parameter(n) and n not in ckpt.model_state]
        unknown = [n for n in ckpt.model_state if n not in params]
        if missing or unknown:
            raise checkpoint.CheckpointError(f"{path!r}: adapters do not fit: missing {missing[:4]}, "
                                             f"unknown {unknown[:4]}")
        for name, array in ckpt.model_state.items():
            params[name].data[...] = array
    else:
        model.load_state_dict(ckpt.model_state)
    return model
