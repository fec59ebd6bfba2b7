"""The demo behind `python -m tinyft demo`: the whole story in one command, in a few minutes.

Map of this file:
  run_demo(...)               pretrain a small GPT on broad text -> fine-tune it on Python source code with
                              three strategies -> measure what each learned and what it forgot; a table
  format_demo_table(...)      the table a student reads: losses before and after, forgetting, time
  two_moons, run_engine_demo  `demo --engine`: the autograd engine alone trains an MLP, in a second
Everything it prints comes from the run it just did.
"""

import math
import os
import time

import numpy as np

from . import functional as F
from .autograd import Tensor, default_rng, manual_seed, no_grad

DEMO_STRATEGIES = ("full", "last_k", "lora")


def run_demo(out="runs/demo", pretrain_steps=900, finetune_steps=200, lr=1e-3, seed=0, progress=True, log=print,
             **pretrain_overrides):
    """Pretrain -> fine-tune -> forgetting report on the offline default corpus. Returns a dict of results.

    1. Pretrain the default GPT (4 layers, 128 wide, character tokenizer) on broad English prose for
       `pretrain_steps` steps (resumes, or reuses, out/pretrain/ckpt.npz when it exists).
    2. Fine-tune a fresh copy of it on standard-library source code with each of DEMO_STRATEGIES.
    3. For each: the code loss before and after (target), the broad-text loss before and after
       (forgetting = after - before), the trainable fraction and the wall time.
    pretrain_overrides: PretrainConfig fields to change (tests pass a tiny model: n_layer=1, n_embd=16, ...).
    Every argument and `out` are checked before the pretraining starts. Ctrl-C during the pretraining saves
    it and raises KeyboardInterrupt (the next run resumes it) instead of fine-tuning a half-trained model.
    """
    from . import checkpoint
    from .experiments import SWEEP_FILES, run_sweep
    from .pretrain import CHECKPOINT_NAME, HISTORY_NAME, PretrainConfig, pretrain

    for name, value in (("pretrain_steps", pretrain_steps), ("finetune_steps", finetune_steps)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be an int >= 1, got {value!r}")
    if not (isinstance(lr, (int, float)) and math.isfinite(lr) and lr > 0):
        raise ValueError(f"lr must be a finite number > 0 (the fine-tuning learning rate), got {lr!r}")
    config = PretrainConfig(steps=pretrain_steps, eval_every=max(pretrain_steps // 4, 1),
                            checkpoint_every=pretrain_steps, seed=seed, out=os.path.join(out, "pretrain"))
    for name, value in pretrain_overrides.items():
        if not hasattr(config, name):
            raise ValueError(f"run_demo: {name!r} is not a PretrainConfig field")
        setattr(config, name, value)
    config.validate()
    checkpoint.check_output_folder(out)
    checkpoint.check_output_folder(config.out, (CHECKPOINT_NAME, HISTORY_NAME), argument="--out (its pretrain/)")
    checkpoint.check_output_folder(os.path.join(out, "forgetting"), SWEEP_FILES, argument="--out (its forgetting/)")

    start = time.perf_counter()
    log(f"tinyft demo: pretrain -> fine-tune -> forgetting, seed {seed}, results in {out}/")
    log(f"1/2 pretraining a GPT on broad English text for {pretrain_steps} steps")
    base = pretrain(config, resume="auto", progress=progress, log=log)
    if base.interrupted:
        raise KeyboardInterrupt  # the checkpoint is saved: the next `demo` resumes the pretraining
    log(f"    validation loss {base.final_val_loss:.3f} nats/char (unigram baseline {base.unigram_val_loss:.3f}), "
        f"{base.tokens_per_s:,.0f} tokens/s, {base.wall_s:.0f} s of training")
    log(f"    sample: {base.sample[:120]!r}")

    log(f"2/2 fine-tuning on Python source code, {finetune_steps} steps each: {', '.join(DEMO_STRATEGIES)}")
    sweep = run_sweep(base.checkpoint, strategies=DEMO_STRATEGIES, lrs=(lr,), mitigations=("none",), seeds=(seed,),
                      steps=finetune_steps, out=os.path.join(out, "forgetting"), batch_size=16, progress=progress,
                      log=lambda *a, **k: None)
    total = base.model.num_parameters()
    table = format_demo_table(sweep["runs"], total)
    log("")
    log(table)
    log("")
    log("code loss: nats per character on held-out standard-library source (lower is better).")
    log("broad loss: nats per character on held-out pretraining text; forgetting = after - before (> 0 forgot).")
    seconds = time.perf_counter() - start
    log(f"total time {seconds:.0f} s. Next: python -m tinyft finetune --help, python -m tinyft forgetting --help, "
        "and the notebooks in notebooks/.")
    return {"pretrain": base.summary(), "runs": sweep["runs"], "total_params": total, "table": table,
            "seconds": seconds}


def format_demo_table(runs, total_params):
    """One line per fine-tuning run: what trained, what it learned, what it forgot, how long it took."""
    lines = [f"{'strategy':<9} {'trainable':>17}  {'code loss':>15}  {'broad loss':>15}  {'forgetting':>10}  {'time':>6}",
             f"{'':<9} {'':>17}  {'before -> after':>15}  {'before -> after':>15}  {'':>10}  {'':>6}"]
    for r in runs:
        if r.get("diverged"):
            lines.append(f"{r['strategy']:<9} {'':>17}  diverged at step {r['diverged_at_step']} (the loss became NaN "
                         f"or inf: lower --lr)  {r['wall_s']:>5.0f}s")
            continue
        fraction = r["trainable_params"] / total_params
        lines.append(f"{r['strategy']:<9} {r['trainable_params']:>9,} ({fraction:>5.1%})  "
                     f"{r['target_before']:>6.3f} -> {r['target_after']:<6.3f}  "
                     f"{r['source_before']:>6.3f} -> {r['source_after']:<6.3f}  "
                     f"{r['forgetting']:>+10.3f}  {r['wall_s']:>5.0f}s")
    return "\n".join(lines)


def two_moons(n=200, noise=0.1, seed=0):
    """n points in two interleaved half circles, labels 0 and 1: x (n, 2) float64, y (n,) int64."""
    rng = np.random.default_rng(seed)
    half = n // 2
    angle = rng.uniform(0, np.pi, size=n)  # (n,)
    upper = np.stack([np.cos(angle[:half]), np.sin(angle[:half])], axis=1)  # (half, 2)
    lower = np.stack([1 - np.cos(angle[half:]), 0.5 - np.sin(angle[half:])], axis=1)  # (n - half, 2)
    x = np.concatenate([upper, lower]) + noise * rng.standard_normal((n, 2))  # (n, 2)
    y = np.concatenate([np.zeros(half, dtype=np.int64), np.ones(n - half, dtype=np.int64)])  # (n,)
    return x, y


def run_engine_demo(steps=500, lr=0.5, hidden=16, seed=0, log_every=100, out=print):
    """Train an MLP on two moons with the engine alone; return a dict of what happened."""
    manual_seed(seed)
    x, y = two_moons(n=200, noise=0.1, seed=seed)
    x = (x - x.mean(axis=0)) / x.std(axis=0)  # standardise the inputs
    rng = default_rng()
    sizes = [2, hidden, hidden, 2]
    params = []
    for fan_in, fan_out in zip(sizes[:-1], sizes[1:]):
        w = Tensor(rng.standard_normal((fan_in, fan_out)) / np.sqrt(fan_in), requires_grad=True)  # (in, out)
        b = Tensor(np.zeros(fan_out), requires_grad=True)  # (out,)
        params += [w, b]

    def forward(inputs):
        h = Tensor(inputs)  # (n, 2)
        for i in range(0, len(params), 2):
            h = h @ params[i] + params[i + 1]  # (n, out)
            if i + 2 < len(params):
                h = h.tanh()
        return h  # (n, 2) logits

    out(f"tinyft engine demo: a {'-'.join(map(str, sizes))} MLP learns two moons "
        f"({len(x)} points) with plain SGD, lr {lr}, seed {seed}")
    start = time.perf_counter()
    history = []
    for step in range(steps + 1):
        loss = F.cross_entropy(forward(x), y)  # forward
        if step % log_every == 0 or step == steps:
            history.append({"step": step, "loss": loss.item()})
            out(f"  step {step:4d}  loss {loss.item():.4f}")
        if step == steps:
            break
        for p in params:
            p.grad = None
        loss.backward()  # backward
        with no_grad():
            for p in params:
                p.data -= lr * p.grad  # SGD step
    with no_grad():
        accuracy = float((forward(x).data.argmax(axis=1) == y).mean())
    seconds = time.perf_counter() - start
    out(f"learned: training accuracy {accuracy:.1%} after {steps} steps in {seconds:.1f} s "
        f"(loss {history[0]['loss']:.3f} -> {history[-1]['loss']:.3f})")
    return {"accuracy": accuracy, "history": history, "seconds": seconds}
