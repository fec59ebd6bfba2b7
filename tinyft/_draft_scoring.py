
# ----------------------------------------------------------------------------------------------------
# Prompting, calibrated (Zhao et al. 2021), and zero-shot scoring by the language model's own loss
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
    gpt = _gpt_of(model)
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
    whole, "n": examples}.
    """
    if task.task_type != "classification":
        raise ValueError(f"calibrated_prompting needs a classification task; {task.name!r} is {task.task_type}")
    tokenizer, block = task.tokenizer, _gpt_of(model).config.block_size
    suffix = task.examples_suffix
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
    return {"accuracy": float((p.argmax(axis=1) == truth).mean()),
            "calibrated_accuracy": float(((p / p_cf).argmax(axis=1) == truth).mean()),
            "shots_fitted": float(np.mean(fitted)), "n": len(examples)}


def text_losses(model, tokenizer, texts, batch_size=32):
    """(N,) float64: the model's mean loss per token (nats) on each text, predicting tokens 2..L from their
    prefixes. Lower = the model finds the text more like what it was trained on."""
    gpt = _gpt_of(model)
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
