"""Baselines: what fine-tuning is judged against, and what a run costs.

Map of this file:
  1. Baselines   train_from_scratch (same architecture, random init, same budget), prompting_baseline (no
                 training, 0 and k shots in the prompt), bag_of_chars_baseline (no network at all, on the
                 characters the network sees: visible_texts; with the majority class), task_baselines (all that apply to a task, on its test split)
  2. Prompting and zero-shot scoring   label_probabilities, calibrated_prompting (demonstrations kept whole,
                 contextual calibration), text_losses, zero_shot_order (a loss threshold chosen on validation)
  3. Cost        run_cost (FLOPs, memory, wall time of a run; phase_tokens splits lp_ft's), pretraining_cost,
                 compare_costs
Lecture 12 (when to fine-tune): docs/finetuning.md sections 8-9 and notebooks/08_when_to_finetune.ipynb.
Imports: this file imports finetune.py (train_from_scratch runs finetune()); finetune() needs run_cost
for its result, so it imports this file inside the function, at call time: no import cycle at load time.
"""

import dataclasses

import numpy as np

from .autograd import manual_seed, no_grad, rng_preserved
from .classifier import ClassifierModel
from .finetune import (
    FinetuneConfig,
    finetune,
    gpt_of,
    head_parameters,
    layer_index,
    task_metric,
)
from .nn import GPT, Module
from .tasks import _log_softmax  # the same float64 log-softmax the tasks score with

# ----------------------------------------------------------------------------------------------------
# 1. Baselines: training from scratch, prompting, a bag of characters
# ----------------------------------------------------------------------------------------------------


def train_from_scratch(model_or_config, task, config=None, **kwargs):
    """The same architecture from random init, trained with the same data, steps and schedule ("full")."""
    config = dataclasses.replace(config or FinetuneConfig(), strategy="full")
    gpt_config = gpt_of(model_or_config).config if isinstance(model_or_config, Module) else model_or_config
    manual_seed(config.seed)
    return finetune(GPT(gpt_config), task, config, **kwargs)


def prompting_baseline(model, task, split="test", shots=(0, 3)):
    """The pretrained model with no parameter change: the task metric with 0 and k examples in the prompt.

    Answers are scored by likelihood (task.evaluate(model, split, shots=k)). Returns {"0-shot": dict, ...}.
    """
    return {f"{k}-shot": task.evaluate(model, split, shots=k) for k in shots}


def _char_features(texts):
    """(N, 130) bag of characters: the share of each ASCII code 0..127, of non-ASCII, and log length."""
    features = np.zeros((len(texts), 130))
    for row, text in enumerate(texts):
        codes = np.minimum(np.frombuffer(text.encode("utf-32-le"), dtype=np.uint32), 128)
        features[row, :129] = np.bincount(codes, minlength=129) / max(len(text), 1)
        features[row, 129] = np.log(len(text) + 1)
    return features


def visible_texts(task, split):
    """The passage characters the network reads, one string per example of a classification split: the
    prompt as the task feeds it (cut from the left to fit block_size with its answer token), decoded, with the
    prompt suffix ("\nkind: ") taken off. A passage longer than the context loses its start here too."""
    suffix = task.prompt_suffix or ""
    texts = []
    for prompt_ids, _ in task._pairs(split):
        text = task.tokenizer.decode(prompt_ids)
        texts.append(text[:len(text) - len(suffix)] if suffix and text.endswith(suffix) else text)
    return texts


def bag_of_chars_baseline(task, steps=300, lr=0.5, weight_decay=1e-4):
    """Non-neural baselines of a classification task, trained on its (possibly noisy) train labels.

    bag_of_chars: multinomial logistic regression on _char_features (standardized with train statistics),
    full-batch gradient descent, `steps` steps, on the characters the network sees (visible_texts: with a
    short block_size the start of a long passage is cut for both). majority: the most frequent train label.
    Returns {"bag_of_chars": {"test": acc, "shifted": acc}, "majority": {"test": acc, "shifted": acc}}.
    """
    if task.task_type != "classification":
        raise ValueError(f"bag_of_chars_baseline needs a classification task; {task.name!r} is {task.task_type}")
    K = len(task.classes)
    x = _char_features(visible_texts(task, "train"))  # (N, F)
    labels = np.array([e.label for e in task.train])  # (N,)
    mean, std = x.mean(axis=0), x.std(axis=0) + 1e-8
    x = (x - mean) / std
    W, b = np.zeros((x.shape[1], K)), np.zeros(K)  # (F, K), (K,)
    onehot = np.eye(K)[labels]  # (N, K)
    for _ in range(steps):
        p = np.exp(_log_softmax(x @ W + b))  # (N, K)
        grad = (p - onehot) / len(x)  # d mean cross-entropy / d logits
        W -= lr * (x.T @ grad + weight_decay * W)
        b -= lr * grad.sum(axis=0)
    majority = int(np.bincount(labels, minlength=K).argmax())
    result = {"bag_of_chars": {}, "majority": {}}
    for split in ("test", "shifted"):
        examples = getattr(task, split)
        if examples is None:  # a task without a shifted split (your own data, built without shifted=)
            continue
        truth = np.array([e.label for e in examples])
        predicted = (((_char_features(visible_texts(task, split)) - mean) / std) @ W + b).argmax(axis=1)
        result["bag_of_chars"][split] = float((predicted == truth).mean())
        result["majority"][split] = float((truth == majority).mean())
    return result


def task_baselines(model, task, config, shots=(0, 3), log=print):
    """The alternatives on the same data and budget: from scratch, prompting (no training), bag of characters.

    Returns {"scratch": metric on test, "prompting": {"0-shot": ..., ...}, "bag_of_chars": ...}; a baseline
    that does not apply to the task is left out.
    """
    out = {}
    scratch = train_from_scratch(model, task, dataclasses.replace(config, out=None), progress=False,
                                 log=lambda *a: None)
    out["scratch"] = task_metric(scratch.after["test"], task)
    if task.task_type != "lm":
        try:
            out["prompting"] = {k: task_metric(v, task) for k, v in prompting_baseline(model, task, "test", shots).items()}
        except TypeError:  # this task's evaluate takes no shots
            pass
    if task.task_type == "classification":
        simple = bag_of_chars_baseline(task)  # {"bag_of_chars": {"test": acc, ...}, "majority": {...}}
        out["bag_of_chars"] = simple["bag_of_chars"]["test"]
        out["majority"] = simple["majority"]["test"]
    return out


# ----------------------------------------------------------------------------------------------------
# 2. Prompting, calibrated (Zhao et al. 2021), and zero-shot scoring by the language model's own loss
# ----------------------------------------------------------------------------------------------------
#
# A pretrained language model can classify with no training at all: read the prompt, and compare the
# probabilities it gives to each label's first token. Two things make that fair:
#   1. the context must hold each demonstration whole (a demonstration cut from the left loses its start,
#      or even its label), so demonstrations are dropped whole, never cut;
#   2. the model's bias towards some label tokens (whatever it found likely after "kind: ") must be
#      divided out: contextual calibration measures the label probabilities p_cf on content-free inputs
#      ("N/A", "", "[MASK]") with the same demonstrations, and scores each label by p(label | x) / p_cf.


def label_probabilities(model, tokenizer, prompts, label_ids, batch_size=32):
    """(N, K) float64: p(label k's first token | prompt), renormalized over the K labels, for each prompt.

    Each prompt is encoded and read whole (ValueError if one is longer than the model's block_size).
    """
    gpt = gpt_of(model)
    encoded = [tokenizer.encode(p) for p in prompts]
    longest = max(len(ids) for ids in encoded)
    if longest > gpt.config.block_size:
        raise ValueError(f"prompts: the longest has {longest} tokens, more than the model's block_size "
                         f"{gpt.config.block_size}; use fewer demonstrations")
    label_ids = np.asarray(label_ids, dtype=np.int64)
    out = np.zeros((len(prompts), len(label_ids)))
    was_training = model.training
    model.eval()
    try:
        with no_grad():
            for i in range(0, len(encoded), batch_size):
                chunk = encoded[i:i + batch_size]
                lengths = np.array([len(ids) for ids in chunk])  # (B,)
                x = np.zeros((len(chunk), lengths.max()), dtype=np.int64)  # (B, T) right-padded
                for row, ids in enumerate(chunk):
                    x[row, :len(ids)] = ids
                logits, _ = model(x)  # (B, T, V); causal: padding after a row's end is never seen
                last = np.asarray(logits.data, dtype=np.float64)[np.arange(len(chunk)), lengths - 1]  # (B, V)
                z = last[:, label_ids]  # (B, K)
                z = z - z.max(axis=1, keepdims=True)
                out[i:i + len(chunk)] = np.exp(z) / np.exp(z).sum(axis=1, keepdims=True)
    finally:
        model.train(was_training)
    return out


CONTENT_FREE = ("N/A", "", "[MASK]")


def _demonstrations(task, shots, rng, room, tokenizer):
    """`shots` train demonstrations (prompt + answer + blank line), drawn without replacement, dropped whole
    from the front while they do not fit `room` tokens. Returns (text, how many fit)."""
    chosen = [task.train[i] for i in rng.choice(len(task.train), size=shots, replace=False)] if shots else []
    texts = [e.prompt + e.answer + "\n\n" for e in chosen]
    while texts and len(tokenizer.encode("".join(texts))) > room:
        texts.pop(0)
    return "".join(texts), len(texts)


def calibrated_prompting(model, task, split="test", shots=0, seed=0, content_free=CONTENT_FREE):
    """Prompting a classification task, raw and with contextual calibration.

    For each example: demonstrations (the same draw for its content-free prompts), then the passage's prompt;
    raw prediction = argmax p(label | prompt); calibrated = argmax p(label | prompt) / p_cf(label), with p_cf
    the mean label distribution over the content-free prompts (the passage replaced by "N/A", "", "[MASK]").
    Returns {"accuracy": raw, "calibrated_accuracy": calibrated, "shots_fitted": mean demonstrations that fit
    whole, "n": examples, "predictions" and "calibrated_predictions": class indices, one per example}.
    """
    if task.task_type != "classification":
        raise ValueError(f"calibrated_prompting needs a classification task; {task.name!r} is {task.task_type}")
    tokenizer, block = task.tokenizer, gpt_of(model).config.block_size
    suffix = task.prompt_suffix
    rng = np.random.default_rng(seed)
    prompts, free_prompts, fitted = [], [], []
    examples = task._split(split)
    for e in examples:
        room = block - len(tokenizer.encode(e.prompt))
        demos, k = _demonstrations(task, shots, rng, room, tokenizer)
        prompts.append(demos + e.prompt)
        free_prompts.extend(demos + text + suffix for text in content_free)
        fitted.append(k)
    p = label_probabilities(model, tokenizer, prompts, task.label_ids)  # (N, K)
    p_cf = label_probabilities(model, tokenizer, free_prompts, task.label_ids)  # (N * C, K)
    p_cf = p_cf.reshape(len(examples), len(content_free), -1).mean(axis=1)  # (N, K)
    truth = np.array([e.label for e in examples])
    raw, calibrated = p.argmax(axis=1), (p / p_cf).argmax(axis=1)  # (N,) each
    return {"accuracy": float((raw == truth).mean()), "calibrated_accuracy": float((calibrated == truth).mean()),
            "shots_fitted": float(np.mean(fitted)), "n": len(examples),
            "predictions": raw.tolist(), "calibrated_predictions": calibrated.tolist()}


def text_losses(model, tokenizer, texts, batch_size=32):
    """(N,) float64: the model's mean loss per token (nats) on each text, predicting tokens 2..L from their
    prefixes. Lower = the model finds the text more like what it was trained on."""
    gpt = gpt_of(model)
    encoded = [tokenizer.encode(t)[:gpt.config.block_size + 1] for t in texts]
    out = np.zeros(len(texts))
    was_training = model.training
    model.eval()
    try:
        with no_grad():
            for i in range(0, len(encoded), batch_size):
                chunk = encoded[i:i + batch_size]
                T = max(len(ids) for ids in chunk) - 1
                x = np.zeros((len(chunk), T), dtype=np.int64)  # (B, T)
                y = np.full((len(chunk), T), -1, dtype=np.int64)  # (B, T), -1 = not counted
                for row, ids in enumerate(chunk):
                    x[row, :len(ids) - 1], y[row, :len(ids) - 1] = ids[:-1], ids[1:]
                logits, _ = model(x)  # (B, T, V)
                z = np.asarray(logits.data, dtype=np.float64)
                z = z - z.max(axis=-1, keepdims=True)
                logp = z - np.log(np.exp(z).sum(axis=-1, keepdims=True))  # (B, T, V)
                mask = y >= 0
                picked = np.take_along_axis(logp, np.where(mask, y, 0)[..., None], axis=-1)[..., 0]  # (B, T)
                out[i:i + len(chunk)] = -(picked * mask).sum(axis=1) / mask.sum(axis=1)
    finally:
        model.train(was_training)
    return out


def zero_shot_order(model, task):
    """The pretrained model as a zero-shot order classifier: "real" when its loss per token on the passage is
    below a threshold chosen on the validation split (the best validation accuracy), applied to test and
    shifted. Also the pairwise accuracy: for each real/shuffled twin, does the real one get the lower loss?
    Returns {"threshold", "val", "test", "shifted", "pairwise_test", "pairwise_shifted"}.
    """
    if task.name != "order":
        raise ValueError(f"zero_shot_order needs the 'order' task, got {task.name!r}")
    scores = {s: text_losses(model, task.tokenizer, [e.text for e in task._split(s)]) for s in ("val", "test", "shifted")}
    labels = {s: np.array([e.label for e in task._split(s)]) for s in scores}
    candidates = np.sort(scores["val"])
    thresholds = (candidates[:-1] + candidates[1:]) / 2  # midpoints: every distinct split of the val scores

    def accuracy(split, threshold):
        return float(((scores[split] >= threshold).astype(int) == labels[split]).mean())  # 0 = real = low loss

    best = max(thresholds, key=lambda t: accuracy("val", t))
    result = {"threshold": float(best), **{s: accuracy(s, best) for s in scores}}
    for s in ("test", "shifted"):
        twins = {}
        for e, score in zip(task._split(s), scores[s]):
            twins.setdefault(tuple(sorted(e.text.split(" "))), {})[e.label] = score
        pairs = [v for v in twins.values() if len(v) == 2]
        result[f"pairwise_{s}"] = float(np.mean([v[0] < v[1] for v in pairs]))
    return result


# ----------------------------------------------------------------------------------------------------
# 3. Cost: FLOPs, memory and time of a run, and of pretraining
# ----------------------------------------------------------------------------------------------------


def _matmul_params(model):
    """{name: size} of the parameters that are multiplied with activations (embedding lookups excluded)."""
    gpt = gpt_of(model)
    untied = getattr(gpt, "head_untied", False)
    out = {}
    for name, p in model.named_parameters():
        if p.ndim < 2 or name.endswith("wpe.weight"):
            continue
        if name.endswith("wte.weight") and (untied or isinstance(model, ClassifierModel)):
            continue  # only a lookup: the output matmul is lm_head's own (untied) or absent (classifier)
        if name.endswith("lm_head.weight") and isinstance(model, ClassifierModel):
            continue
        out[name] = p.size
    return out


def run_cost(model, tokens, wall_s, trainable_params=None, phases=None, bytes_per_float=4):
    """The cost of a run, estimated per token (attention's T^2 term and biases are ignored):

        forward              2 * N_matmul * tokens       (a multiply and an add per weight)
        backward, inputs     2 * N_path * tokens         (activation gradients, from the loss down to the
                                                          lowest trainable layer; frozen layers on the way
                                                          still pay this)
        backward, weights    2 * N_trainable * tokens    (only trainable weights need their gradient)
    Full fine-tuning: N_path = N_trainable = N_matmul, the usual 6 N tokens. A head alone: 2N + 4 V C per
    token. The engine agrees: layers below the lowest trainable one are not in the graph, and the fused
    linear (functional.LinearFunction) skips the weight gradient of a frozen weight. Memory beyond the
    weights: gradients (1 float per trainable parameter) and AdamW's two moments (2 floats per trainable
    parameter); activations are kept for every layer the backward passes through (not counted here).
    phases (lp_ft) = {"probe": tokens, "full": tokens}: the probe phase is costed with the head alone.
    """
    gpt = gpt_of(model)
    n_layer = gpt.config.n_layer
    matmul = _matmul_params(model)
    n_matmul = sum(matmul.values())
    trainable = {name: p.size for name, p in model.named_parameters() if p.requires_grad}
    n_trainable = trainable_params if trainable_params is not None else sum(trainable.values())

    def flops_for(trainable_names, n_tokens):
        if not trainable_names:
            return 2 * n_matmul * n_tokens
        lowest = min(layer_index(n, n_layer) for n in trainable_names)
        n_path = sum(size for name, size in matmul.items() if layer_index(name, n_layer) >= lowest)
        n_train = sum(matmul.get(name, 0) for name in trainable_names)  # biases, LayerNorms: negligible
        return 2 * n_matmul * n_tokens + 2 * n_path * n_tokens + 2 * n_train * n_tokens

    if phases:
        head_names = [n for n, p in model.named_parameters() if any(p is q for q in head_parameters(model))]
        flops = flops_for(head_names, phases["probe"]) + flops_for(list(trainable), phases["full"])
        n_trainable = max(n_trainable, sum(trainable.values()))
    else:
        flops = flops_for(list(trainable), tokens)
    return {
        "trainable_params": int(n_trainable),
        "total_params": int(model.num_parameters()),
        "matmul_params": int(n_matmul),
        "tokens": int(tokens),
        "flops": int(flops),
        "weights_bytes": int(model.num_parameters() * bytes_per_float),
        "gradient_bytes": int(n_trainable * bytes_per_float),
        "optimizer_state_bytes": int(2 * n_trainable * bytes_per_float),
        "wall_s": round(float(wall_s), 3),
    }


def phase_tokens(history, tokens):
    """lp_ft: {"probe": tokens, "full": tokens}, `tokens` shared in proportion to each phase's steps
    (history rows carry "phase"); None for an empty history. run_cost(phases=...) reads it."""
    if not history:
        return None
    probe_steps = sum(1 for row in history if row["phase"] == "probe")
    probe_tokens = tokens * probe_steps // len(history)
    return {"probe": probe_tokens, "full": tokens - probe_tokens}


def pretraining_cost(meta, model):
    """Pretraining's cost from its checkpoint meta: tokens = steps * batch_size * block_size, FLOPs = 6 N tokens."""
    pc = meta.get("pretrain_config") or {}
    steps = meta.get("step") or pc.get("steps", 0)
    tokens = int(steps) * int(pc.get("batch_size", 0)) * int(pc.get("block_size", 0))
    gpt = gpt_of(model)
    with rng_preserved():
        plain = GPT(gpt.config)  # tied, untouched: the model that was pretrained
    n = sum(_matmul_params(plain).values())
    return {"tokens": tokens, "flops": 6 * n * tokens, "trainable_params": plain.num_parameters(),
            "optimizer_state_bytes": 2 * plain.num_parameters() * 4, "wall_s": meta.get("train_seconds")}


def compare_costs(finetune_cost, pretrain_cost):
    """Fine-tuning's cost as a fraction of pretraining's (tokens, FLOPs, optimizer memory, wall time)."""
    out = {}
    for key in ("tokens", "flops", "optimizer_state_bytes", "wall_s"):
        a, b = finetune_cost.get(key), pretrain_cost.get(key)
        out[f"{key}_fraction"] = round(a / b, 6) if a is not None and b else None
    return out
