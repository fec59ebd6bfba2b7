"""End to end: the engine alone (Tensors, cross_entropy, a hand-written SGD step) learns two-moons and XOR.

No nn module here on purpose: the weights are plain Tensors, so this test depends on the engine only.
"""

import numpy as np

import tinyft
from tinyft import Tensor
from tinyft import functional as F


def two_moons(n, noise, seed):
    """n points on two interleaved half circles (labels 0 and 1), with Gaussian noise."""
    rng = np.random.default_rng(seed)
    angle = rng.uniform(0, np.pi, size=n)
    label = rng.integers(0, 2, size=n)
    x = np.where(label == 0, np.cos(angle), 1 - np.cos(angle))
    y = np.where(label == 0, np.sin(angle), 0.5 - np.sin(angle))
    points = np.stack([x, y], axis=1) + noise * rng.standard_normal((n, 2))
    return (points - points.mean(axis=0)) / points.std(axis=0), label


def init_mlp(sizes, seed):
    """Weights (out, in) as in torch.nn.Linear, scaled by 1/sqrt(in); biases zero."""
    rng = np.random.default_rng(seed)
    params = []
    for fan_in, fan_out in zip(sizes[:-1], sizes[1:]):
        params.append(Tensor(rng.standard_normal((fan_out, fan_in)) / np.sqrt(fan_in), requires_grad=True))
        params.append(Tensor(np.zeros(fan_out), requires_grad=True))
    return params


def mlp(params, x):
    h = x
    for layer in range(0, len(params) - 2, 2):
        h = F.linear(h, params[layer], params[layer + 1]).tanh()  # (N, hidden)
    return F.linear(h, params[-2], params[-1])  # (N, classes)


def train_with_sgd(params, x, y, steps, lr):
    for _ in range(steps):
        loss = F.cross_entropy(mlp(params, x), y)
        for p in params:
            p.grad = None
        loss.backward()
        with tinyft.no_grad():
            for p in params:
                p.data -= lr * p.grad  # plain SGD, in place
    return loss.item()


def accuracy(params, x, y):
    with tinyft.no_grad():
        logits = mlp(params, x)
    return float((logits.data.argmax(axis=1) == y).mean())


def test_mlp_trained_with_sgd_separates_two_moons():
    x, y = two_moons(200, noise=0.1, seed=0)
    params = init_mlp([2, 16, 16, 2], seed=0)
    assert accuracy(params, x, y) < 0.9
    final_loss = train_with_sgd(params, Tensor(x), y, steps=1500, lr=0.5)
    assert final_loss < 0.05
    assert accuracy(params, x, y) >= 0.99


def test_mlp_trained_with_sgd_learns_xor():
    x = np.array([[0.0, 0.0], [0.0, 1.0], [1.0, 0.0], [1.0, 1.0]])
    y = np.array([0, 1, 1, 0])
    params = init_mlp([2, 8, 2], seed=1)
    train_with_sgd(params, Tensor(x), y, steps=500, lr=0.5)
    assert accuracy(params, x, y) == 1.0
