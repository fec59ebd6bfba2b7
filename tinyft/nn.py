"""Modules, layers and a GPT: parameters gathered into named trees, and the transformer built from them.

Map of this file:
  1. Parameter, Module      a Tensor that trains; a tree of modules found by walking each one's __dict__
                            (parameters(), named_parameters(), state_dict(), load_state_dict(), train/eval, to)
  2. ModuleList, ModuleDict containers whose children are named "0", "1", ... or by keyword
  3. Layers                 Linear, Embedding, LayerNorm, Dropout: thin wrappers around tinyft.functional
  4. The GPT                GPTConfig, MLP, CausalSelfAttention, Block (pre-LayerNorm), GPT (tied lm_head)
Names, shapes and init follow nanoGPT's model.py (Karpathy) and GPT-2 (Radford et al. 2019), so a
state_dict loads into a PyTorch nanoGPT and back. docs/transformer.md walks through the math.
"""

import dataclasses
import math
from collections import namedtuple

import numpy as np

from . import functional as F
from .autograd import Tensor, default_rng, no_grad

# ----------------------------------------------------------------------------------------------------
# 1. Parameter and Module
# ----------------------------------------------------------------------------------------------------

FLOAT_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))


class Parameter(Tensor):
    """A Tensor that a Module trains: requires_grad=True, and it owns a copy of its data.

    New parameters are float32 (fast); pass dtype=None to keep the data's dtype, or convert a whole
    model with Module.to(np.float64) (what gradient checks need).
    """

    def __init__(self, data, requires_grad=True, dtype=np.float32):
        data = data.data if isinstance(data, Tensor) else data
        super().__init__(np.array(data, dtype=dtype), requires_grad=requires_grad)  # np.array copies

    def __repr__(self):
        return f"Parameter(shape={self.shape}, dtype={self.dtype}, requires_grad={self.requires_grad})"


# What load_state_dict(strict=False) returns, as torch does: names the model has that the dict lacks,
# and names the dict has that the model lacks.
IncompatibleKeys = namedtuple("IncompatibleKeys", ["missing_keys", "unexpected_keys"])


class Module:
    """Base class of every layer and model. Subclasses set attributes in __init__ and write forward().

    Registration is plain attribute assignment: walking a module's __dict__ in insertion order finds
    its Parameters and its child Modules (a list of Modules becomes a ModuleList, children "0", "1", ...).
    Anything else (ints, configs, plain Tensors) is ordinary state. Names are dotted paths:
    "transformer.h.0.attn.c_attn.weight".

    Shared (tied) parameters: one Parameter reachable under two names, like GPT's lm_head.weight and
    transformer.wte.weight. parameters() and named_parameters() yield it once (under the first name
    found), so an optimizer updates it once and num_parameters() counts it once. state_dict() lists it
    under every name (the same array twice, as torch does), and load_state_dict() accepts a dict with all
    of its names (their values must be equal) or any one of them; the tie is kept either way.
    """

    training = True  # a class default, so a subclass that forgets super().__init__() still works

    def __init__(self):
        self.training = True

    def __setattr__(self, name, value):
        if isinstance(value, list) and value and all(isinstance(v, Module) for v in value):
            value = ModuleList(value)  # a list of layers becomes a module whose children are "0", "1", ...
        object.__setattr__(self, name, value)

    def forward(self, *args, **kwargs):
        raise NotImplementedError(f"{type(self).__name__} has no forward(); subclasses of Module define it")

    def __call__(self, *args, **kwargs):
        return self.forward(*args, **kwargs)

    # --- walking the tree -------------------------------------------------------------------------
    def named_children(self):
        """(name, module) for each direct child, in the order the attributes were set."""
        for name, value in vars(self).items():
            if isinstance(value, Module):
                yield name, value

    def children(self):
        for _, child in self.named_children():
            yield child

    def _walk(self, prefix=""):
        """(dotted name, module) for self and every descendant, parents first; shared modules repeat."""
        yield prefix, self
        for name, child in self.named_children():
            yield from child._walk(f"{prefix}.{name}" if prefix else name)

    def named_modules(self, prefix=""):
        """(dotted name, module) for self (name `prefix`, "" by default) and every descendant, each once."""
        seen = set()
        for name, module in self._walk(prefix):
            if id(module) not in seen:
                seen.add(id(module))
                yield name, module

    def modules(self):
        for _, module in self.named_modules():
            yield module

    def named_parameters(self, prefix="", remove_duplicate=True):
        """(dotted name, Parameter) pairs. A shared Parameter comes once, under the first name found,
        unless remove_duplicate=False (then once per name: what state_dict() uses)."""
        seen = set()
        for module_name, module in self._walk(prefix):
            for name, value in vars(module).items():
                if not isinstance(value, Parameter):
                    continue
                if remove_duplicate and id(value) in seen:
                    continue
                seen.add(id(value))
                yield (f"{module_name}.{name}" if module_name else name), value

    def parameters(self):
        """Every Parameter once (tied ones too): pass this to an optimizer."""
        for _, p in self.named_parameters():
            yield p

    def num_parameters(self, trainable_only=False):
        """How many numbers the model holds (a tied Parameter counted once); trainable_only skips frozen ones."""
        return sum(p.size for p in self.parameters() if p.requires_grad or not trainable_only)

    # --- modes and gradients ----------------------------------------------------------------------
    def train(self, mode=True):
        """Set training mode (dropout on) on self and every descendant; returns self."""
        for module in self.modules():
            module.training = bool(mode)
        return self

    def eval(self):
        """Evaluation mode (dropout off): same as train(False)."""
        return self.train(False)

    def zero_grad(self):
        """Forget every parameter's gradient (backward() accumulates, so call this before each one)."""
        for p in self.parameters():
            p.grad = None

    def requires_grad_(self, flag=True):
        """Freeze (False) or unfreeze (True) every parameter of this module and its descendants."""
        for p in self.parameters():
            p.requires_grad_(flag)
        return self

    def to(self, dtype):
        """Convert every parameter (and its gradient) to float32 or float64, in place; returns self.

        The Parameter objects stay the same (an optimizer holding them keeps working); their .data are
        replaced by converted arrays, so tied parameters stay tied.
        """
        dtype = np.dtype(dtype)
        if dtype not in FLOAT_DTYPES:
            raise ValueError(f"to: dtype must be float32 or float64, got {dtype}")
        for p in self.parameters():
            p.data = p.data.astype(dtype)
            if p.grad is not None:
                p.grad = p.grad.astype(dtype)
        return self

    # --- saving and loading -----------------------------------------------------------------------
    def state_dict(self):
        """{dotted name: np.ndarray copy} for every name of every parameter, in walking order.

        A tied Parameter appears under each of its names, as one shared copy (the same array object).
        """
        copies = {}  # id(param) -> its one copy
        out = {}
        for name, p in self.named_parameters(remove_duplicate=False):
            if id(p) not in copies:
                copies[id(p)] = p.data.copy()
            out[name] = copies[id(p)]
        return out

    def load_state_dict(self, state_dict, strict=True):
        """Copy arrays from `state_dict` into the parameters (cast to each parameter's dtype).

        Everything is checked before anything is written, and every problem is reported in one
        ValueError: missing names (in the model, not in the dict), unexpected names (in the dict, not in
        the model), mis-shaped entries, and tied names whose values differ. With strict=False, missing and
        unexpected names are allowed and returned as IncompatibleKeys(missing_keys, unexpected_keys);
        mis-shaped entries still raise. A tied Parameter counts as present when any one of its names is.
        """
        if not hasattr(state_dict, "keys") or not hasattr(state_dict, "__getitem__"):
            raise ValueError(f"load_state_dict: expected a dict of name -> array, got {type(state_dict).__name__}")
        groups = {}  # id(param) -> (param, [all of its names])
        for name, p in self.named_parameters(remove_duplicate=False):
            groups.setdefault(id(p), (p, []))[1].append(name)
        known = {name for _, names in groups.values() for name in names}

        unexpected = [key for key in state_dict.keys() if key not in known]
        missing, mis_shaped, not_numbers, tied_differ, updates = [], [], [], [], []
        for p, names in groups.values():
            given = [name for name in names if name in state_dict]
            if not given:
                missing.extend(names)
                continue
            arrays = []
            for name in given:
                value = state_dict[name]
                array = np.asarray(value.data if isinstance(value, Tensor) else value)
                if not (np.issubdtype(array.dtype, np.floating) or np.issubdtype(array.dtype, np.integer)):
                    not_numbers.append(f"{name} (dtype {array.dtype})")
                elif array.shape != p.shape:
                    mis_shaped.append(f"{name}: dict has {array.shape}, model has {p.shape}")
                else:
                    arrays.append(array)
            if len(arrays) != len(given):
                continue
            if any(not np.array_equal(arrays[0], a) for a in arrays[1:]):
                tied_differ.append(" and ".join(given))
                continue
            updates.append((p, arrays[0]))

        problems = []
        if strict and missing:
            problems.append(f"missing (in the model, not in the dict): {', '.join(missing)}")
        if strict and unexpected:
            problems.append(f"unexpected (in the dict, not in the model): {', '.join(unexpected)}")
        if mis_shaped:
            problems.append(f"mis-shaped: {'; '.join(mis_shaped)}")
        if not_numbers:
            problems.append(f"not real-number arrays: {', '.join(not_numbers)}")
        if tied_differ:
            problems.append(f"tied names with different values (they are one parameter): {'; '.join(tied_differ)}")
        if problems:
            raise ValueError(f"load_state_dict: the dict does not fit this {type(self).__name__}; nothing was "
                             "loaded.\n  " + "\n  ".join(problems))
        for p, array in updates:
            p.data[...] = array  # in place, in the parameter's own dtype
        return IncompatibleKeys(missing, unexpected)

    # --- printing ---------------------------------------------------------------------------------
    def extra_repr(self):
        """The text inside the parentheses of a leaf's repr, e.g. 'in_features=8, out_features=32'."""
        return ""

    def __repr__(self):
        children = list(self.named_children())
        if not children:
            return f"{type(self).__name__}({self.extra_repr()})"
        lines = [f"{type(self).__name__}("]
        for name, child in children:
            child_text = repr(child).replace("\n", "\n  ")
            lines.append(f"  ({name}): {child_text}")
        lines.append(")")
        return "\n".join(lines)


# ----------------------------------------------------------------------------------------------------
# 2. Containers
# ----------------------------------------------------------------------------------------------------


class ModuleList(Module):
    """A list of modules whose children are named "0", "1", ... (so names read "h.0.attn...")."""

    def __init__(self, modules=()):
        super().__init__()
        for module in modules:
            self.append(module)

    def append(self, module):
        if not isinstance(module, Module):
            raise ValueError(f"ModuleList: items must be Modules, got {type(module).__name__}")
        setattr(self, str(len(self)), module)
        return self

    def __len__(self):
        return sum(1 for _ in self.named_children())

    def __iter__(self):
        return self.children()

    def __getitem__(self, i):
        n = len(self)
        if not -n <= i < n:
            raise IndexError(f"ModuleList index {i} is out of range for {n} modules")
        return getattr(self, str(i % n))


class ModuleDict(Module):
    """Named modules, given as keywords: ModuleDict(wte=Embedding(...), h=[Block(...), ...])."""

    def __init__(self, **modules):
        super().__init__()
        for name, module in modules.items():
            setattr(self, name, module)

    def __getitem__(self, name):
        return dict(self.named_children())[name]

    def __iter__(self):
        return (name for name, _ in self.named_children())

    def __len__(self):
        return sum(1 for _ in self.named_children())


# ----------------------------------------------------------------------------------------------------
# 3. Layers: each holds its Parameters and calls one op from tinyft.functional
# ----------------------------------------------------------------------------------------------------


def normal_init(shape, std):
    """float32 draws from N(0, std^2) with tinyft's Generator (tinyft.manual_seed makes them repeat)."""
    return default_rng().normal(0.0, std, size=shape).astype(np.float32)


class Linear(Module):
    """y = x W^T + b with weight W (out_features, in_features) as torch.nn.Linear; bias (out_features,).

    Init as GPT-2: W ~ N(0, std^2) with std=0.02 by default, b = 0.
    """

    def __init__(self, in_features, out_features, bias=True, std=0.02):
        super().__init__()
        self.in_features, self.out_features = in_features, out_features
        self.weight = Parameter(normal_init((out_features, in_features), std))  # (out, in)
        self.bias = Parameter(np.zeros(out_features)) if bias else None  # (out,)

    def forward(self, x):  # (..., in) -> (..., out)
        return F.linear(x, self.weight, self.bias)

    def extra_repr(self):
        return f"in_features={self.in_features}, out_features={self.out_features}, bias={self.bias is not None}"


class Embedding(Module):
    """A lookup table: row i of weight (num_embeddings, embedding_dim) is the vector of id i. Init N(0, 0.02^2)."""

    def __init__(self, num_embeddings, embedding_dim, std=0.02):
        super().__init__()
        self.num_embeddings, self.embedding_dim = num_embeddings, embedding_dim
        self.weight = Parameter(normal_init((num_embeddings, embedding_dim), std))  # (num, dim)

    def forward(self, idx):  # integer ids (...) -> (..., dim)
        return F.embedding(idx, self.weight)

    def extra_repr(self):
        return f"{self.num_embeddings}, {self.embedding_dim}"


class LayerNorm(Module):
    """Normalise the last axis to mean 0 and variance 1, then scale by weight (init 1) and shift by bias
    (init 0). bias=False keeps the weight only (as nanoGPT's LayerNorm(ndim, bias=False))."""

    def __init__(self, dim, eps=1e-5, bias=True):
        super().__init__()
        self.dim, self.eps = dim, eps
        self.weight = Parameter(np.ones(dim))  # (dim,)
        self.bias = Parameter(np.zeros(dim)) if bias else None  # (dim,)

    def forward(self, x):  # (..., dim) -> (..., dim)
        return F.layer_norm(x, self.weight, self.bias, self.eps)

    def extra_repr(self):
        return f"{self.dim}, eps={self.eps}, bias={self.bias is not None}"


class Dropout(Module):
    """In training mode, zero each element with probability p and scale the rest by 1/(1-p); in eval
    mode (model.eval()), pass x through unchanged."""

    def __init__(self, p=0.0):
        super().__init__()
        if not 0.0 <= p < 1.0:
            raise ValueError(f"Dropout: p must be in [0, 1), got {p}")
        self.p = float(p)

    def forward(self, x):
        return F.dropout(x, self.p, self.training)

    def extra_repr(self):
        return f"p={self.p}"


# ----------------------------------------------------------------------------------------------------
# 4. The GPT (shapes: B batch, T positions, C = n_embd, H = n_head, hd = C // H, V = vocab_size)
# ----------------------------------------------------------------------------------------------------


GELU_KINDS = ("tanh", "exact")  # GPTConfig.gelu: F.gelu (GPT-2's tanh approximation) or F.gelu_exact (x Phi(x))


@dataclasses.dataclass
class GPTConfig:
    """The sizes of a GPT, with nanoGPT's names. Checked on creation: a bad field raises ValueError naming it."""

    vocab_size: int  # V: how many token ids
    block_size: int  # the longest context (positions 0 .. block_size-1 have an embedding)
    n_layer: int  # how many Blocks
    n_head: int  # H: attention heads per Block
    n_embd: int  # C: the width of the residual stream; must be divisible by n_head
    dropout: float = 0.0  # dropout probability (embeddings, attention output, MLP output)
    bias: bool = True  # biases in Linear layers and LayerNorms (False: weights only)
    gelu: str = "tanh"  # the MLP's GELU: "tanh" (GPT-2's approximation) or "exact" (x Phi(x), nanoGPT's nn.GELU())

    def __post_init__(self):
        for name in ("vocab_size", "block_size", "n_layer", "n_head", "n_embd"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value <= 0:
                raise ValueError(f"GPTConfig: {name} must be a positive int, got {value!r}")
            setattr(self, name, int(value))
        if self.n_embd % self.n_head:
            raise ValueError(f"GPTConfig: n_embd={self.n_embd} must be divisible by n_head={self.n_head} "
                             "(each head gets n_embd // n_head channels)")
        is_number = isinstance(self.dropout, (int, float)) and not isinstance(self.dropout, bool)
        if not is_number or not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"GPTConfig: dropout must be a number in [0, 1), got {self.dropout!r}")
        self.dropout = float(self.dropout)
        if not isinstance(self.bias, (bool, np.bool_)):
            raise ValueError(f"GPTConfig: bias must be True or False, got {self.bias!r}")
        self.bias = bool(self.bias)
        if self.gelu not in GELU_KINDS:
            raise ValueError(f"GPTConfig: gelu must be one of {', '.join(map(repr, GELU_KINDS))} (\"tanh\": GPT-2's "
                             f"approximation; \"exact\": x Phi(x) as nanoGPT's nn.GELU()), got {self.gelu!r}")

    def to_dict(self):
        """Plain JSON-ready dict (checkpoints store it)."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d):
        """Rebuild from to_dict()'s output; unknown or missing fields raise ValueError naming them.

        A dict saved before a field existed gets its default (gelu: "tanh", what every older model used)."""
        fields = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - fields)
        if unknown:
            raise ValueError(f"GPTConfig.from_dict: unknown fields {unknown}; expected some of {sorted(fields)}")
        try:
            return cls(**d)
        except TypeError as err:  # a required field is missing
            raise ValueError(f"GPTConfig.from_dict: {err}") from None


class MLP(Module):
    """Position-wise feed-forward: widen to 4C, GELU (config.gelu: "tanh" or "exact"), project back to C, dropout."""

    def __init__(self, config):
        super().__init__()
        C = config.n_embd
        self.gelu = F.gelu_exact if config.gelu == "exact" else F.gelu
        self.c_fc = Linear(C, 4 * C, bias=config.bias)
        self.c_proj = Linear(4 * C, C, bias=config.bias, std=0.02 / math.sqrt(2 * config.n_layer))  # residual
        self.dropout = Dropout(config.dropout)

    def forward(self, x):  # (B, T, C)
        h = self.gelu(self.c_fc(x))  # (B, T, 4C)
        return self.dropout(self.c_proj(h))  # (B, T, C)


class CausalSelfAttention(Module):
    """Multi-head causal self-attention: one Linear makes q, k, v for all heads; each head attends over
    positions 0..t; the heads' outputs are concatenated and projected back by c_proj.

    F.qkv_attention has no dropout on the attention probabilities, so unlike nanoGPT there is no attn_dropout
    (it holds no parameters, so the state_dict names are unaffected); resid_dropout acts on the output.
    """

    def __init__(self, config):
        super().__init__()
        C = config.n_embd
        self.n_head, self.n_embd = config.n_head, C
        self.c_attn = Linear(C, 3 * C, bias=config.bias)
        self.c_proj = Linear(C, C, bias=config.bias, std=0.02 / math.sqrt(2 * config.n_layer))  # residual
        self.resid_dropout = Dropout(config.dropout)

    def forward(self, x):  # (B, T, C)
        qkv = self.c_attn(x)  # (B, T, 3C): q, k, v side by side, each C = H heads of hd = C // H channels
        # F.qkv_attention splits q, k, v, gives each head its own axis (B, H, T, hd), attends (position t
        # sees 0..t), and puts the heads back side by side; F.qkv_attention_composed shows each of those
        # steps. The fused op does them without copying: each head is a strided view of qkv.
        y = F.qkv_attention(qkv, self.n_head, causal=True)  # (B, T, C)
        return self.resid_dropout(self.c_proj(y))  # (B, T, C)


class Block(Module):
    """One transformer layer, pre-LayerNorm: x = x + attn(ln_1(x)); x = x + mlp(ln_2(x))."""

    def __init__(self, config):
        super().__init__()
        self.ln_1 = LayerNorm(config.n_embd, bias=config.bias)
        self.attn = CausalSelfAttention(config)
        self.ln_2 = LayerNorm(config.n_embd, bias=config.bias)
        self.mlp = MLP(config)

    def forward(self, x):  # (B, T, C)
        x = x + self.attn(self.ln_1(x))  # (B, T, C): tokens exchange information
        x = x + self.mlp(self.ln_2(x))  # (B, T, C): each position computes on its own
        return x


class GPT(Module):
    """A GPT-2 style language model: token + position embeddings, n_layer Blocks, a final LayerNorm and
    lm_head, whose weight IS transformer.wte.weight (weight tying: one (V, C) Parameter both embeds ids
    and scores the next id). See Module for how the tied name appears in parameters() and state_dict().
    """

    def __init__(self, config):
        super().__init__()
        if not isinstance(config, GPTConfig):
            raise ValueError(f"GPT: expected a GPTConfig, got {type(config).__name__}; "
                             "build one with GPTConfig(vocab_size=..., block_size=..., ...)")
        self.config = config
        V, C = config.vocab_size, config.n_embd
        self.transformer = ModuleDict(
            wte=Embedding(V, C),  # token embeddings (V, C)
            wpe=Embedding(config.block_size, C),  # position embeddings (block_size, C)
            drop=Dropout(config.dropout),
            h=[Block(config) for _ in range(config.n_layer)],
            ln_f=LayerNorm(C, bias=config.bias),
        )
        self.lm_head = Linear(C, V, bias=False)
        self.lm_head.weight = self.transformer.wte.weight  # tie: the same Parameter object

    def _check_ids(self, idx, name, caller, limit_length=True):
        """idx as an integer ndarray (B, T), or a ValueError that names the argument and the limit."""
        idx = np.asarray(idx.data if isinstance(idx, Tensor) else idx)
        if not np.issubdtype(idx.dtype, np.integer):
            raise ValueError(f"{caller}: {name} must hold integer token ids, got dtype {idx.dtype}; "
                             f"convert with {name}.astype(np.int64)")
        if idx.ndim != 2:
            raise ValueError(f"{caller}: {name} must be 2-D (B, T), got shape {idx.shape}"
                             + (f"; add a batch axis: {name}[None, :]" if idx.ndim == 1 else ""))
        if idx.shape[0] == 0 or idx.shape[1] == 0:
            raise ValueError(f"{caller}: {name} has shape {idx.shape}; it needs at least one row and one position")
        block_size = self.config.block_size
        if limit_length and idx.shape[1] > block_size:
            raise ValueError(f"{caller}: {name} has T={idx.shape[1]} positions but block_size is {block_size}; "
                             f"crop it: {name}[:, -{block_size}:]")
        V = self.config.vocab_size
        if idx.min() < 0 or idx.max() >= V:
            raise ValueError(f"{caller}: {name} ids must lie in [0, vocab_size={V}), "
                             f"got min {idx.min()} and max {idx.max()}")
        return idx

    def forward(self, idx, targets=None):
        """Logits (B, T, V) for the next token at every position, and the mean cross-entropy against
        `targets` (B, T) (positions whose target is -1 are ignored), or None without targets."""
        idx = self._check_ids(idx, "idx", "GPT.forward")  # (B, T)
        B, T = idx.shape
        if targets is not None:
            targets = np.asarray(targets.data if isinstance(targets, Tensor) else targets)
            if not np.issubdtype(targets.dtype, np.integer):
                raise ValueError(f"GPT.forward: targets must hold integer token ids, got dtype {targets.dtype}")
            if targets.shape != idx.shape:
                raise ValueError(f"GPT.forward: targets has shape {targets.shape} but idx has {idx.shape}; "
                                 "they must match (targets[b, t] is the id that follows idx[b, :t+1])")
            V = self.config.vocab_size
            bad = (targets != -1) & ((targets < 0) | (targets >= V))
            if bad.any():
                raise ValueError(f"GPT.forward: targets must lie in [0, vocab_size={V}) or be -1 (ignored), "
                                 f"found {targets[bad][0]}")

        x = self._hidden_states(idx)  # (B, T, C)
        logits = self.lm_head(x)  # (B, T, V)
        loss = None if targets is None else F.cross_entropy(logits, targets, ignore_index=-1)
        return logits, loss

    def hidden_states(self, idx):
        """The final hidden states (B, T, C), after ln_f: what lm_head reads (a new head can read them too)."""
        return self._hidden_states(self._check_ids(idx, "idx", "GPT.hidden_states"))

    def _hidden_states(self, idx):  # idx already checked, (B, T)
        T = idx.shape[1]
        tr = self.transformer
        tok_emb = tr.wte(idx)  # (B, T, C)
        pos_emb = tr.wpe(np.arange(T))  # (T, C), broadcast over the batch
        x = tr.drop(tok_emb + pos_emb)  # (B, T, C)
        for block in tr.h:
            x = block(x)  # (B, T, C)
        return tr.ln_f(x)  # (B, T, C)

    def generate(self, idx, max_new_tokens, temperature=1.0, top_k=None, seed=None):
        """Append `max_new_tokens` sampled ids to each row of idx (B, T); returns int64 (B, T + max_new_tokens).

        Each step feeds the last block_size ids (longer contexts are cropped), divides the last position's
        logits by `temperature`, keeps the `top_k` largest (top_k larger than V means all), and samples from
        their softmax. temperature=0 means greedy: always the most likely id. seed=None draws from
        tinyft's Generator (tinyft.manual_seed); an int seed uses its own Generator, so the same seed gives
        the same text. Runs under no_grad in eval mode (dropout off), then restores the previous mode.
        """
        idx = self._check_ids(idx, "idx", "GPT.generate", limit_length=False).astype(np.int64)  # (B, T)
        if isinstance(max_new_tokens, bool) or not isinstance(max_new_tokens, (int, np.integer)) or max_new_tokens < 0:
            raise ValueError(f"GPT.generate: max_new_tokens must be an int >= 0, got {max_new_tokens!r}")
        if not isinstance(temperature, (int, float, np.floating, np.integer)) or not temperature >= 0:
            raise ValueError(f"GPT.generate: temperature must be >= 0 (0 means greedy), got {temperature!r}")
        V = self.config.vocab_size
        if top_k is not None:
            if isinstance(top_k, bool) or not isinstance(top_k, (int, np.integer)) or top_k < 1:
                raise ValueError(f"GPT.generate: top_k must be None or an int >= 1, got {top_k!r}")
            top_k = min(int(top_k), V)
        rng = default_rng() if seed is None else np.random.default_rng(seed)

        was_training = self.training
        self.eval()
        try:
            with no_grad():
                for _ in range(max_new_tokens):
                    context = idx[:, -self.config.block_size:]  # (B, <= block_size)
                    logits, _ = self(context)  # (B, T', V)
                    last = logits.data[:, -1, :].astype(np.float64)  # (B, V)
                    if temperature == 0:
                        next_id = last.argmax(axis=-1)  # (B,)
                    else:
                        last = last / temperature
                        if top_k is not None:
                            kth = np.sort(last, axis=-1)[:, -top_k][:, None]  # (B, 1) k-th largest
                            last = np.where(last < kth, -np.inf, last)  # (B, V)
                        probs = F.softmax(Tensor(last), axis=-1).data  # (B, V)
                        next_id = np.array([rng.choice(V, p=row) for row in probs])  # (B,) one draw per row
                    idx = np.concatenate([idx, next_id[:, None].astype(np.int64)], axis=1)  # (B, T+1)
        finally:
            self.train(was_training)
        return idx
