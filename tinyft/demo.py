"""The demo behind `python -m tinyft demo`: the engine learns a small task end to end, in seconds.

Map of this file:
  two_moons(n, noise, seed)   a classic 2-D toy dataset: two interleaved half circles
  run_engine_demo(...)        a 2 -> 16 -> 16 -> 2 MLP trained with plain SGD on raw Tensors,
                              printing the loss as it falls and the accuracy it reaches
Everything it prints comes from the run it just did.
"""

import time

import numpy as np

from . import functional as F
from .autograd import Tensor, default_rng, manual_seed, no_grad


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
