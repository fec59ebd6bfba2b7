"""LoRA: fine-tune a frozen weight through a low-rank update beside it (Hu et al. 2021).

Map of this file:
  LoRALinear        y = x W^T + b + (alpha/r) x A^T B^T around a frozen Linear; merge() / unmerge()
  inject_lora       wrap the chosen Linear layers of every transformer Block (LORA_TARGETS names them)
  lora_layers, lora_state_dict, merged_state_dict, LoRAAdapters    find the adapters, save them alone
                    (what an adapter checkpoint holds), or fold them into the base weights
Reference code: microsoft/LoRA's loralib (layers.py). Lecture note: docs/finetuning.md, section 3.

The math. A Linear layer computes y = x W^T + b with W (out, in). LoRA freezes W and b and learns
    delta_W = (alpha / r) * B A,     B (out, r), A (r, in),  r << min(in, out)
so the layer computes y = x (W + delta_W)^T + b = x W^T + b + (alpha / r) * x A^T B^T. delta_W has rank at
most r and costs r (in + out) trainable numbers instead of in * out.
  Initialization (what LoRALinear does): B = 0, so delta_W = 0 and the wrapped model computes exactly the
  pretrained function at step 0; A ~ N(0, 1/in) (standard deviation 1/sqrt(in)), drawn from tinyft's
  generator, so that dL/dB = (alpha/r) g^T (x A^T) is not zero and B starts to move. The paper (Sec. 4.1)
  says "random Gaussian initialization for A and zero for B" without giving a scale; loralib draws A from
  Kaiming-uniform, U(-1/sqrt(in), 1/sqrt(in)), whose variance 1/(3 in) is a third of ours.
  Scaling by alpha / r lets you change r without retuning the learning rate (the paper sets alpha once).
  Where: the paper adapts W_q and W_v, two separate matrices. nanoGPT fuses q, k and v into one Linear,
  c_attn (C -> 3C), so an adapter on "c_attn" is ONE low-rank update spanning q, k and v together: one A
  shared by all three, and B's 3C rows cover q, k and v.
The wrapped layer keeps its weight under its own name (c_attn.weight), so a merged model loads into a plain GPT.
"""

import math

import numpy as np

from . import functional as F
from .nn import Block, Linear, Module, Parameter, normal_init

# The Linear layers inside a Block that LoRA may wrap ("c_proj" alone means both attn.c_proj and mlp.c_proj).
LORA_TARGETS = ("attn.c_attn", "attn.c_proj", "mlp.c_fc", "mlp.c_proj", "c_attn", "c_proj", "c_fc")


def check_lora_args(rank, alpha, targets):
    """ValueError unless rank is a positive int, alpha a number > 0 and every target one of LORA_TARGETS."""
    if isinstance(rank, bool) or not isinstance(rank, (int, np.integer)) or rank <= 0:
        raise ValueError(f"lora_rank must be a positive int, got {rank!r}")
    if not isinstance(alpha, (int, float, np.number)) or not alpha > 0:
        raise ValueError(f"lora_alpha must be a number > 0, got {alpha!r}")
    targets = (targets,) if isinstance(targets, str) else tuple(targets)
    unknown = [t for t in targets if t not in LORA_TARGETS]
    if unknown or not targets:
        raise ValueError(f"lora_targets: unknown Linear name(s) {unknown or targets!r}; valid names: "
                         f"{', '.join(LORA_TARGETS)} (inside each block)")


class LoRALinear(Module):
    """y = x W^T + b + (alpha / r) * x A^T B^T, with W (out, in) and b frozen and A (r, in), B (out, r) trained.

    delta_W = (alpha / r) B A. B starts at zero (delta_W = 0: the pretrained function, exactly), A from
    N(0, 1/in); the module docstring says why, and how this differs from the paper and loralib.
    """

    def __init__(self, base, rank, alpha):
        super().__init__()
        if not isinstance(base, Linear):
            raise ValueError(f"LoRALinear wraps a Linear, got {type(base).__name__}")
        check_lora_args(rank, alpha, ("c_attn",))
        self.in_features, self.out_features = base.in_features, base.out_features
        self.weight = base.weight  # (out, in), the pretrained matrix: frozen
        self.bias = base.bias  # (out,) or None: frozen
        self.weight.requires_grad_(False)
        if self.bias is not None:
            self.bias.requires_grad_(False)
        self.rank, self.alpha, self.scaling = int(rank), float(alpha), float(alpha) / int(rank)
        dtype = base.weight.dtype
        std = 1.0 / math.sqrt(self.in_features)
        self.lora_A = Parameter(normal_init((rank, self.in_features), std), dtype=dtype)  # (r, in)
        self.lora_B = Parameter(np.zeros((self.out_features, rank)), dtype=dtype)  # (out, r): zero, so delta_W = 0
        self.merged = False

    def delta_weight(self):
        """delta_W = (alpha / r) B A as a plain array (out, in)."""
        return self.scaling * (self.lora_B.data @ self.lora_A.data)

    def forward(self, x):  # (..., in) -> (..., out)
        y = F.linear(x, self.weight, self.bias)  # (..., out): the frozen path
        if self.merged:  # delta_W already lives inside weight
            return y
        low = F.linear(x, self.lora_A)  # (..., r)
        return y + F.linear(low, self.lora_B) * self.scaling  # (..., out)

    def merge(self):
        """W <- W + delta_W: one matmul per layer at inference, no adapter path. Training needs unmerge()."""
        if not self.merged:
            self.weight.data += self.delta_weight().astype(self.weight.dtype)
            self.merged = True
        return self

    def unmerge(self):
        """W <- W - delta_W: back to the frozen weight plus a separate adapter (equal up to rounding)."""
        if self.merged:
            self.weight.data -= self.delta_weight().astype(self.weight.dtype)
            self.merged = False
        return self

    def extra_repr(self):
        return (f"in_features={self.in_features}, out_features={self.out_features}, rank={self.rank}, "
                f"alpha={self.alpha}, merged={self.merged}")


def inject_lora(model, rank=8, alpha=16, targets=("c_attn",)):
    """Replace every Block Linear whose name ends with a target by a LoRALinear around it; returns the list.

    model: a GPT, or any Module holding one (a classifier wraps its GPT); its Blocks are found in order.
    """
    targets = (targets,) if isinstance(targets, str) else tuple(targets)
    check_lora_args(rank, alpha, targets)
    wrapped = []
    for block in [m for m in model.modules() if isinstance(m, Block)]:
        for parent_name in ("attn", "mlp"):
            parent = getattr(block, parent_name)
            for name, child in list(parent.named_children()):
                full = f"{parent_name}.{name}"
                if isinstance(child, Linear) and (full in targets or name in targets):
                    setattr(parent, name, LoRALinear(child, rank, alpha))
                    wrapped.append(getattr(parent, name))
    return wrapped


def lora_layers(model):
    """[(dotted name, LoRALinear)] of every adapter in the model, in order."""
    return [(name, m) for name, m in model.named_modules() if isinstance(m, LoRALinear)]


def is_lora_parameter(name):
    """True for the adapter matrices' names ("...c_attn.lora_A", "...c_attn.lora_B")."""
    return name.rsplit(".", 1)[-1] in ("lora_A", "lora_B")


def lora_state_dict(model):
    """Only the adapters: {"...c_attn.lora_A": (r, in), "...c_attn.lora_B": (out, r), ...} (copies)."""
    return {name: p.data.copy() for name, p in model.named_parameters() if is_lora_parameter(name)}


def merged_state_dict(model):
    """A plain GPT state_dict with every delta_W added into its base weight and the lora_ entries dropped.

    The model itself is not changed. Loads into GPT(config) (and PyTorch nanoGPT) as an ordinary model.
    """
    sd = {name: a for name, a in model.state_dict().items() if not is_lora_parameter(name)}
    for name, layer in lora_layers(model):
        if not layer.merged:
            sd[f"{name}.weight"] = (sd[f"{name}.weight"] + layer.delta_weight()).astype(layer.weight.dtype)
    return sd


class LoRAAdapters(Module):
    """Only the adapter matrices of a LoRA model, under their full names (what an adapter checkpoint holds)."""

    def __init__(self, model):
        super().__init__()
        self.config = model.config  # a GPT's, or a classifier's (the GPT body's)
        for name, array in lora_state_dict(model).items():
            vars(self)[name] = Parameter(array, dtype=None)  # dotted names kept as they are
