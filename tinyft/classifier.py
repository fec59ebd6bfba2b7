"""classifier: classification through a new head on a GPT's pooled hidden states (finetune's classifier="head").

Map of this file:
  ClassifierHead   logits = pool(h) W^T + b over the final hidden states h (B, T, C); pool = mean or last
  ClassifierModel  a GPT body plus a ClassifierHead; forward(x, y) finds each row's label position in the
                   task's LM targets y, so the same batches train it as train the label-token scorer
The other way to classify, scoring the label words' first tokens with the language model itself, needs no
new weights: tasks.Task.evaluate. LP-FT (Kumar et al. 2022) probes this head first: finetune.py.
"""

import numpy as np

from . import functional as F
from .autograd import no_grad
from .nn import Linear, Module


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
