"""Optimizers, learning-rate schedules and gradient clipping: how a gradient becomes a weight update.

Map of this file:
  1. Optimizer            param groups, zero_grad(), state_dict()/load_state_dict(), the NaN/inf check
  2. SGD, Adam, AdamW     each step() is a loop over parameters; SGD writes its formula out here, Adam and
                          AdamW call kernels/adamw.py's adam_update_many, whose NumPy twin adam_update_reference
                          is the textbook formula line by line (the Numba loop computes the same in one pass)
  3. param_groups_for_weight_decay   decay on Linear weights only (no biases, LayerNorm, embeddings)
  4. Schedules            cosine_schedule (linear warmup, then cosine), set_lr, LRScheduler
  5. clip_grad_norm       rescale all gradients together when their global L2 norm is too large;
                          check_step_finite / DivergenceError: the loops stop at a NaN or inf, before the update
Semantics follow torch.optim (SGD, Adam, AdamW); Adam: Kingma & Ba 2015; AdamW: Loshchilov & Hutter 2019.
docs/optim.md derives the formulas.
"""

import math

import numpy as np

from .autograd import Tensor
from .kernels.adamw import adam_update_many

# ----------------------------------------------------------------------------------------------------
# 1. Optimizer: the bookkeeping every optimizer shares
# ----------------------------------------------------------------------------------------------------


class Optimizer:
    """Holds the parameters in groups and the per-parameter state; subclasses write step().

    params          a list of Tensors, or a list of param-group dicts such as
                    {"params": [w1, w2], "lr": 3e-4, "weight_decay": 0.0, "names": ["a.weight", "b.weight"]}
                    (missing hyperparameters take the optimizer's defaults; "names" is optional and only
                    used in error messages and to rebuild groups from a checkpoint)
    check_finite    if True, step() first checks every gradient and raises ValueError, naming the
                    parameter, when one holds NaN or inf (no parameter is updated then)

    self.param_groups  list of dicts like torch: {"params": [...], hyperparameters..., maybe "names"}
    self.state         {index: {"m": array, ...}}; index counts parameters across all groups in order
                       (group 0's parameters first). Parameters with requires_grad=False never get state.
    """

    state_keys = ()  # the names of a subclass's per-parameter state arrays

    def __init__(self, params, defaults, check_finite=False):
        self.defaults = dict(defaults)
        self.check_finite = bool(check_finite)
        self.state = {}
        params = list(params)
        if not params:
            raise ValueError(f"{type(self).__name__}: got an empty parameter list")
        if not isinstance(params[0], dict):
            params = [{"params": params}]
        self.param_groups = [self._make_group(g, i) for i, g in enumerate(params)]

        seen = {}  # id(param) -> (group, position): the same Tensor in two places would be updated twice
        for gi, group in enumerate(self.param_groups):
            for pi, p in enumerate(group["params"]):
                if id(p) in seen:
                    raise ValueError(f"{type(self).__name__}: a parameter appears twice (group {seen[id(p)][0]} "
                                     f"position {seen[id(p)][1]} and group {gi} position {pi}); tied weights "
                                     "must be passed once")
                seen[id(p)] = (gi, pi)

    def _make_group(self, group, gi):
        if not isinstance(group, dict) or "params" not in group:
            raise ValueError(f"{type(self).__name__}: param group {gi} must be a dict with a 'params' list "
                             "(or pass a plain list of Tensors)")
        group = dict(group)  # never modify the caller's dict
        group["params"] = list(group["params"])
        for p in group["params"]:
            if not isinstance(p, Tensor):
                raise ValueError(f"{type(self).__name__}: param group {gi} holds a {type(p).__name__}, "
                                 "expected Tensors (e.g. model.parameters())")
        if "names" in group:
            group["names"] = [str(n) for n in group["names"]]
            if len(group["names"]) != len(group["params"]):
                raise ValueError(f"{type(self).__name__}: param group {gi} has {len(group['params'])} params "
                                 f"but {len(group['names'])} names")
        for key, value in self.defaults.items():
            group.setdefault(key, value)
        self._check_hyperparameters(group, gi)
        return group

    def _check_hyperparameters(self, group, gi):
        """Turn hyperparameters into plain Python numbers (JSON-able) and reject impossible values."""
        where = f"{type(self).__name__} (param group {gi})"
        for key in ("lr", "weight_decay", "momentum", "eps"):
            if key in group:
                if group[key] is None or not float(group[key]) >= 0.0:
                    raise ValueError(f"{where}: {key} must be a number >= 0, got {group[key]!r}")
                group[key] = float(group[key])
        if "betas" in group:
            betas = tuple(float(b) for b in group["betas"])
            if len(betas) != 2 or not all(0.0 <= b < 1.0 for b in betas):
                raise ValueError(f"{where}: betas must be two numbers in [0, 1), got {group['betas']!r}")
            group["betas"] = betas

    # --- walking over the parameters ------------------------------------------------------------------
    def _indexed(self):
        """(index, group, param, name) for every parameter, index counted across all groups."""
        index = 0
        for group in self.param_groups:
            names = group.get("names")
            for j, p in enumerate(group["params"]):
                yield index, group, p, (names[j] if names else None)
                index += 1

    def params_to_update(self):
        """(index, group, param) for the parameters this step changes: requires_grad and a gradient.

        Frozen parameters (requires_grad=False) and parameters without a gradient this step are skipped.
        With check_finite=True every gradient is checked first, so a NaN never leaves half an update.
        """
        todo = [(i, group, p, name) for i, group, p, name in self._indexed()
                if p.requires_grad and p.grad is not None]
        if self.check_finite:
            for i, _, p, name in todo:
                bad = int(np.size(p.grad) - np.count_nonzero(np.isfinite(p.grad)))
                if bad:
                    label = f"parameter {i}" + (f" ({name!r})" if name else "")
                    raise ValueError(f"{type(self).__name__}.step: the gradient of {label}, shape {p.shape}, "
                                     f"holds {bad} NaN/inf value(s); no parameter was updated. Lower the "
                                     "learning rate, clip gradients (clip_grad_norm) or look for log(0) or a "
                                     "division by zero in the loss")
        return [(i, group, p) for i, group, p, _ in todo]

    @staticmethod
    def _grad(p):
        return p.grad.astype(p.dtype, copy=False)  # the update is computed in the parameter's dtype

    # --- the public interface -------------------------------------------------------------------------
    def zero_grad(self):
        """Forget the gradients (set .grad = None) so the next backward() starts from zero."""
        for _, _, p, _ in self._indexed():
            p.grad = None

    def step(self):
        raise NotImplementedError

    def state_dict(self):
        """A snapshot: {"class", "param_groups", "state"}.

        "param_groups" is JSON-able: each group's hyperparameters, "params" as a list of indices and
        "names" if the group had them. "state" is {index: {key: np.ndarray}}: only arrays (the step
        count is a 0-d int64 array), so checkpoint.py stores them in the .npz and the rest as JSON.
        """
        groups, index = [], 0
        for group in self.param_groups:
            saved = {k: (list(v) if isinstance(v, tuple) else v) for k, v in group.items() if k != "params"}
            saved["params"] = list(range(index, index + len(group["params"])))
            index += len(group["params"])
            groups.append(saved)
        state = {i: {k: np.array(v, dtype=np.int64) if k == "step" else np.array(v, copy=True)
                     for k, v in s.items()}
                 for i, s in self.state.items()}
        return {"class": type(self).__name__, "param_groups": groups, "state": state}

    def load_state_dict(self, state_dict):
        """Restore a state_dict() from an optimizer built over the same parameters in the same groups.

        Checks the class, the number of groups and parameters, names (when both sides have them), the
        state keys and every state array's shape; raises ValueError saying what does not fit.
        """
        me = type(self).__name__
        if state_dict.get("class") != me:
            raise ValueError(f"{me}.load_state_dict: the state was saved by {state_dict.get('class')!r}, not {me}")
        groups = state_dict["param_groups"]
        if len(groups) != len(self.param_groups):
            raise ValueError(f"{me}.load_state_dict: the state has {len(groups)} param groups, "
                             f"this optimizer has {len(self.param_groups)}")
        for gi, (saved, group) in enumerate(zip(groups, self.param_groups)):
            if len(saved["params"]) != len(group["params"]):
                raise ValueError(f"{me}.load_state_dict: param group {gi} has {len(saved['params'])} parameters "
                                 f"in the state but {len(group['params'])} here")
            if "names" in saved and "names" in group and list(saved["names"]) != group["names"]:
                diff = next(f"{a!r} vs {b!r}" for a, b in zip(saved["names"], group["names"]) if a != b)
                raise ValueError(f"{me}.load_state_dict: param group {gi} names differ ({diff})")

        params = {i: p for i, _, p, _ in self._indexed()}
        new_state = {}
        for key, entry in state_dict["state"].items():
            i = int(key)
            if i not in params:
                raise ValueError(f"{me}.load_state_dict: state for parameter {i}, but there are only "
                                 f"{len(params)} parameters")
            if set(entry) != set(self.state_keys):
                raise ValueError(f"{me}.load_state_dict: parameter {i} has state keys {sorted(entry)}, "
                                 f"expected {sorted(self.state_keys)}")
            p, restored = params[i], {}
            for k, value in entry.items():
                value = np.asarray(value)
                if k == "step":
                    if value.shape != () or value.dtype.kind not in "iu":
                        raise ValueError(f"{me}.load_state_dict: parameter {i}: 'step' must be one integer")
                    restored[k] = int(value)
                else:
                    if value.shape != p.shape:
                        raise ValueError(f"{me}.load_state_dict: parameter {i}: state {k!r} has shape "
                                         f"{value.shape}, the parameter has shape {p.shape}")
                    restored[k] = value.astype(p.dtype, copy=True)
            new_state[i] = restored

        for saved, group in zip(groups, self.param_groups):  # hyperparameters (lr, betas, ...) come back too
            for k, v in saved.items():
                if k not in ("params", "names"):
                    group[k] = tuple(v) if k == "betas" else v
        self.state = new_state

    def __repr__(self):
        groups = ", ".join(f"{{{len(g['params'])} params, " + ", ".join(f"{k}={v}" for k, v in g.items()
                           if k not in ("params", "names")) + "}" for g in self.param_groups)
        return f"{type(self).__name__}([{groups}])"


# ----------------------------------------------------------------------------------------------------
# 2. The optimizers
# ----------------------------------------------------------------------------------------------------


class SGD(Optimizer):
    """Stochastic gradient descent with optional momentum and L2 weight decay (torch.optim.SGD semantics).

        g   = grad + weight_decay * theta          (L2 penalty folded into the gradient)
        buf = momentum * buf + g                   (only when momentum > 0; buf starts at 0)
        theta -= lr * buf                          (or lr * g without momentum)
    """

    def __init__(self, params, lr, momentum=0.0, weight_decay=0.0, check_finite=False):
        super().__init__(params, dict(lr=lr, momentum=momentum, weight_decay=weight_decay), check_finite)

    state_keys = ("momentum_buffer",)  # only parameters in groups with momentum > 0 get it

    def step(self):
        for i, group, p in self.params_to_update():
            lr, mu, wd = group["lr"], group["momentum"], group["weight_decay"]
            g = self._grad(p)
            if wd != 0:
                g = g + wd * p.data
            if mu > 0:
                state = self.state.setdefault(i, {"momentum_buffer": np.zeros_like(p.data)})
                state["momentum_buffer"] = buf = mu * state["momentum_buffer"] + g
                g = buf
            p.data -= lr * g  # in place: the same array, the same dtype


class Adam(Optimizer):
    """Adam (Kingma & Ba 2015) with L2 weight decay added to the gradient (torch.optim.Adam semantics).

        g     = grad + weight_decay * theta
        m     = beta1 * m + (1 - beta1) * g          first moment (mean of g), starts at 0
        v     = beta2 * v + (1 - beta2) * g**2       second moment (mean of g^2), starts at 0
        m_hat = m / (1 - beta1**t)                   bias correction: undo the pull towards 0
        v_hat = v / (1 - beta2**t)                   (t = this parameter's step count, from 1)
        theta -= lr * m_hat / (sqrt(v_hat) + eps)
    """

    state_keys = ("step", "m", "v")
    decoupled_weight_decay = False

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0, check_finite=False):
        super().__init__(params, dict(lr=lr, betas=betas, eps=eps, weight_decay=weight_decay), check_finite)

    def step(self):
        updates = []
        for i, group, p in self.params_to_update():
            lr, (beta1, beta2), eps, wd = group["lr"], group["betas"], group["eps"], group["weight_decay"]
            state = self.state.setdefault(i, {"step": 0, "m": np.zeros_like(p.data), "v": np.zeros_like(p.data)})
            state["step"] += 1
            updates.append((p.data, self._grad(p), state["m"], state["v"], lr, beta1, beta2, eps, wd, state["step"],
                            self.decoupled_weight_decay))
        # The formulas of the docstring, in one pass over each p, g, m and v (updated in place): the Numba
        # kernel, or its NumPy twin under tinyft.kernels.use("numpy"), in tinyft/kernels/adamw.py. All the
        # parameters go in one call, so the cores share the work with one hand-off per step.
        adam_update_many(updates)


class AdamW(Adam):
    """Adam with decoupled weight decay (Loshchilov & Hutter 2019; torch.optim.AdamW semantics).

        theta *= 1 - lr * weight_decay               decay first, independent of the gradient
        then the Adam update above with g = grad (no L2 term)
    """

    decoupled_weight_decay = True

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.01, check_finite=False):
        super().__init__(params, lr=lr, betas=betas, eps=eps, weight_decay=weight_decay, check_finite=check_finite)


OPTIMIZERS = {"SGD": SGD, "Adam": Adam, "AdamW": AdamW}  # by class name, for rebuilding from a checkpoint

# ----------------------------------------------------------------------------------------------------
# 3. Which parameters get weight decay
# ----------------------------------------------------------------------------------------------------

EMBEDDING_SUFFIXES = ("wte.weight", "wpe.weight")


def param_groups_for_weight_decay(model, weight_decay):
    """Two param groups: decay on the weight matrices of Linear layers, no decay on everything else.

    No decay: biases and LayerNorm weights (ndim < 2: they set offsets and scales, shrinking them towards 0
    has no regularising meaning) and the embeddings wte and wpe (a row is only trained when its token
    appears; decay would shrink rare tokens' rows every step). nanoGPT's configure_optimizers decays every
    2-D parameter, embeddings included; we leave the embeddings undecayed, for the reason above. The GPT's lm_head
    is tied to wte (one Parameter), so it is not decayed either, under whichever name it is listed.
    Frozen parameters stay in the groups (the optimizer skips them), so indices do not change on unfreezing.
    """
    named = list(model.named_parameters())
    embedding_ids = {id(p) for name, p in named if name.endswith(EMBEDDING_SUFFIXES)}
    wte = getattr(getattr(getattr(model, "transformer", None), "wte", None), "weight", None)
    if wte is not None:
        embedding_ids.add(id(wte))  # the tied lm_head.weight / transformer.wte.weight Parameter

    decay = {"params": [], "names": [], "weight_decay": float(weight_decay)}
    no_decay = {"params": [], "names": [], "weight_decay": 0.0}
    for name, p in named:
        group = no_decay if p.ndim < 2 or id(p) in embedding_ids else decay
        group["params"].append(p)
        group["names"].append(name)
    return [g for g in (decay, no_decay) if g["params"]]


# ----------------------------------------------------------------------------------------------------
# 4. Learning-rate schedules
# ----------------------------------------------------------------------------------------------------


def cosine_schedule(step, max_lr, warmup_steps, total_steps, min_lr=0.0):
    """Linear warmup from 0 to max_lr over warmup_steps, then a half cosine down to min_lr at total_steps.

        step <  warmup_steps:  lr = max_lr * step / warmup_steps
        warmup <= step <= total:  progress = (step - warmup_steps) / (total_steps - warmup_steps)
                               lr = min_lr + (max_lr - min_lr) * (1 + cos(pi * progress)) / 2
        step >  total_steps:   lr = min_lr
    """
    if not (0 <= warmup_steps <= total_steps):
        raise ValueError(f"cosine_schedule: need 0 <= warmup_steps <= total_steps, got warmup_steps="
                         f"{warmup_steps}, total_steps={total_steps}")
    if step < 0:
        raise ValueError(f"cosine_schedule: step must be >= 0, got {step}")
    if step < warmup_steps:
        return max_lr * step / warmup_steps
    if step > total_steps or total_steps == warmup_steps:
        return min_lr
    progress = (step - warmup_steps) / (total_steps - warmup_steps)  # 0 -> 1
    return min_lr + (max_lr - min_lr) * 0.5 * (1.0 + math.cos(math.pi * progress))


def set_lr(optimizer, lr):
    """Set every group's learning rate to lr (times the group's optional "lr_scale", default 1)."""
    for group in optimizer.param_groups:
        group["lr"] = float(lr) * group.get("lr_scale", 1.0)


class LRScheduler:
    """cosine_schedule driven by a step counter: call step() after each optimizer.step().

    >>> sched = LRScheduler(opt, max_lr=3e-4, warmup_steps=100, total_steps=2000)   # sets lr for step 0
    >>> loss.backward(); opt.step(); sched.step()
    """

    def __init__(self, optimizer, max_lr, warmup_steps, total_steps, min_lr=0.0):
        self.optimizer = optimizer
        self.max_lr, self.warmup_steps, self.total_steps, self.min_lr = max_lr, warmup_steps, total_steps, min_lr
        self.step_count = 0
        set_lr(optimizer, self.lr())

    def lr(self):
        return cosine_schedule(self.step_count, self.max_lr, self.warmup_steps, self.total_steps, self.min_lr)

    def step(self):
        self.step_count += 1
        set_lr(self.optimizer, self.lr())

    def state_dict(self):
        return {"step_count": self.step_count}

    def load_state_dict(self, state_dict):
        self.step_count = int(state_dict["step_count"])
        set_lr(self.optimizer, self.lr())


# ----------------------------------------------------------------------------------------------------
# 5. Gradient clipping
# ----------------------------------------------------------------------------------------------------


def clip_grad_norm(params, max_norm):
    """Scale all gradients by one factor so their global L2 norm is at most max_norm; return the norm before.

        total = sqrt(sum over parameters of sum(grad**2))      (accumulated in float64)
        if total > max_norm:  grad *= max_norm / total         (in place, every parameter)

    Parameters without a gradient are skipped; a Tensor listed twice counts once. A norm of 0 changes
    nothing. A NaN/inf norm is returned and the gradients are left as they are (check_finite catches it).
    """
    if max_norm < 0:
        raise ValueError(f"clip_grad_norm: max_norm must be >= 0, got {max_norm}")
    if hasattr(params, "parameters"):
        params = params.parameters()
    grads, seen = [], set()
    for p in params:
        if p.grad is not None and id(p) not in seen:
            seen.add(id(p))
            grads.append(p.grad)
    total = math.sqrt(sum(float(np.sum(np.square(g, dtype=np.float64))) for g in grads))
    if math.isfinite(total) and total > max_norm:
        scale = max_norm / total
        for g in grads:
            g *= scale
    return total


class DivergenceError(ValueError):
    """Training met a non-finite loss or gradient norm: the loop stopped before that step's update.

    step (the step that failed, counted from 1), loss, grad_norm, last_finite_loss (None if the very first
    step failed) and lr are kept as attributes; the loops add to the message where the last good model is.
    """

    def __init__(self, message, step=None, loss=None, grad_norm=None, last_finite_loss=None, lr=None):
        super().__init__(message)
        self.step, self.loss, self.grad_norm = step, loss, grad_norm
        self.last_finite_loss, self.lr = last_finite_loss, lr


def check_step_finite(step, loss, grad_norm, last_finite_loss=None, lr=None):
    """Raise DivergenceError unless loss and grad_norm are finite numbers (call it between clip and step).

    A NaN or inf spreads: one update with it makes every weight NaN, and every later loss NaN. Checking the
    loss and the gradient norm (one number each, already computed) catches it at the step it first appears,
    before the optimizer writes it into the weights, as Optimizer(check_finite=True) does per gradient.
    """
    if math.isfinite(loss) and math.isfinite(grad_norm):
        return
    last = "none (the first step failed)" if last_finite_loss is None else f"{last_finite_loss:.4f}"
    at_lr = f" at lr {lr:g}" if lr is not None else ""
    raise DivergenceError(f"training diverged at step {step}{at_lr}: loss {loss}, gradient norm {grad_norm} "
                          f"(last finite loss {last}); lower the learning rate",
                          step=step, loss=loss, grad_norm=grad_norm, last_finite_loss=last_finite_loss, lr=lr)


def all_finite(params):
    """True when every value of every parameter is finite (checked before a checkpoint is written)."""
    return all(bool(np.isfinite(p.data).all()) for p in params)
