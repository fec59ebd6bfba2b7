"""The engine: tensors that remember how they were made, and reverse-mode differentiation.

Map of this file:
  1. Random state and grad mode   manual_seed, default_rng, get/set_rng_state, rng_preserved, no_grad
  2. Function and Context         forward(ctx, *arrays) / backward(ctx, grad) pairs; apply() records the graph
  3. unbroadcast                  the one helper that sums a gradient back to its input's shape
  4. Tensor                       an ndarray + requires_grad + the Context that made it; backward()
  5. The ops                      elementwise, matmul, reductions, shape ops, indexing, concatenate/stack/split
Ideas from micrograd (engine.py) and PyTorch's autograd.Function; written from scratch for reading.
"""

import contextlib
import random

import numpy as np

# ----------------------------------------------------------------------------------------------------
# 1. Random state and grad mode
# ----------------------------------------------------------------------------------------------------

_rng = np.random.default_rng(0)
_grad_enabled = True


def manual_seed(seed):
    """Seed every random source tinyft uses: its own Generator, NumPy's legacy one and `random`."""
    global _rng
    if not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"manual_seed: seed must be a non-negative int, got {seed!r}")
    _rng = np.random.default_rng(int(seed))
    np.random.seed(int(seed) % 2**32)
    random.seed(int(seed))


def default_rng():
    """The Generator behind parameter init, dropout and sampling (reseeded by manual_seed)."""
    return _rng


def get_rng_state():
    """A JSON-serialisable snapshot of tinyft's Generator (checkpoints store it)."""
    return _rng.bit_generator.state


def set_rng_state(state):
    """Restore a snapshot taken by get_rng_state()."""
    _rng.bit_generator.state = state


@contextlib.contextmanager
def rng_preserved():
    """Context manager: tinyft's random state after the block is what it was before it.

    Building a model draws its initial weights from tinyft's Generator. Code that builds one only to load
    saved weights into it (a checkpoint, a merged copy) does it inside this block, so the caller's later
    draws (LoRA's A, a classifier head, dropout, sampling) do not depend on whether that model was built.
    """
    state = get_rng_state()
    try:
        yield
    finally:
        set_rng_state(state)


def is_grad_enabled():
    return _grad_enabled


class no_grad:
    """Context manager (and decorator) that stops graph recording: for evaluation and weight updates.

    >>> with no_grad():
    ...     y = model(x)        # y.requires_grad is False, nothing is saved for backward
    """

    def __enter__(self):
        global _grad_enabled
        self._previous = _grad_enabled
        _grad_enabled = False

    def __exit__(self, *exc):
        global _grad_enabled
        _grad_enabled = self._previous

    def __call__(self, func):
        def wrapper(*args, **kwargs):
            with no_grad():
                return func(*args, **kwargs)

        wrapper.__name__, wrapper.__doc__ = func.__name__, func.__doc__
        return wrapper


# ----------------------------------------------------------------------------------------------------
# 2. Function and Context
# ----------------------------------------------------------------------------------------------------


class Context:
    """What one application of a Function remembers for its backward.

    `inputs` are the Tensors it was applied to (the edges of the graph), `saved` the arrays the
    forward chose to keep, and any other attribute (ctx.axis = ...) the forward sets.
    """

    def __init__(self, function, inputs):
        self.function = function
        self.inputs = inputs
        self.needs_input_grad = tuple(t.requires_grad for t in inputs)
        self.saved = ()
        self.freed = False

    def save_for_backward(self, *arrays):
        self.saved = arrays

    def free(self):
        """Let go of the saved arrays and the input Tensors once backward has used them (what
        backward(retain_graph=False) does): intermediate results nobody else holds are then freed."""
        self.saved = ()
        self.inputs = ()
        self.freed = True


class Function:
    """A differentiable operation. Subclass it and write two static methods:

        forward(ctx, *arrays, **kwargs) -> array     plain ndarrays in, one ndarray out
        backward(ctx, grad_out) -> tuple             one gradient (or None) per input array

    Then call `MyFunction.apply(*tensors, **kwargs)`: it runs forward on the arrays and, when grad
    mode is on and some input requires grad, records a Context so backward() can find its way back.
    """

    @staticmethod
    def forward(ctx, *arrays, **kwargs):
        raise NotImplementedError

    @staticmethod
    def backward(ctx, grad_out):
        raise NotImplementedError

    @classmethod
    def apply(cls, *inputs, **kwargs):
        tensors = tuple(x if isinstance(x, Tensor) else Tensor(x) for x in inputs)
        ctx = Context(cls, tensors)
        out = Tensor(cls.forward(ctx, *(t.data for t in tensors), **kwargs))
        if _grad_enabled and any(ctx.needs_input_grad):
            out.requires_grad = True
            out._ctx = ctx
        return out


# ----------------------------------------------------------------------------------------------------
# 3. unbroadcast: the one helper every op's backward uses
# ----------------------------------------------------------------------------------------------------


def unbroadcast(grad, shape):
    """Sum `grad` down to `shape`, undoing NumPy broadcasting.

    Broadcasting copies an input along (a) leading axes it did not have and (b) axes where it had
    size 1. A copy used k times receives the sum of its k gradients, so we sum over exactly those axes.
    """
    while grad.ndim > len(shape):  # (a) axes broadcasting added in front
        grad = grad.sum(axis=0)
    for axis, size in enumerate(shape):  # (b) axes that were stretched from 1
        if size == 1 and grad.shape[axis] != 1:
            grad = grad.sum(axis=axis, keepdims=True)
    return grad


def _broadcast_shape(op, a, b):
    try:
        return np.broadcast_shapes(a.shape, b.shape)
    except ValueError:
        raise ValueError(f"{op}: shapes {a.shape} and {b.shape} do not broadcast "
                         "(sizes must match or be 1, aligned from the right)") from None


# ----------------------------------------------------------------------------------------------------
# 4. Tensor
# ----------------------------------------------------------------------------------------------------


class Tensor:
    """An ndarray that can record the operations applied to it.

    data           np.ndarray; its dtype is kept (float64 in, float64 out)
    requires_grad  whether backward() should compute a gradient for it
    grad           np.ndarray of data's shape, filled by backward() (leaves only), or None
    """

    # Tells NumPy to step aside, so `array * tensor` and `array @ tensor` (ndarray or NumPy scalar
    # on the left) call Tensor.__rmul__ / __rmatmul__ instead of building an object array of Tensors.
    __array_ufunc__ = None

    def __init__(self, data, requires_grad=False, dtype=None):
        if isinstance(data, Tensor):
            data = data.data
        data = np.asarray(data, dtype=dtype)
        if requires_grad and not np.issubdtype(data.dtype, np.floating):
            raise ValueError(f"Tensor: only floating-point tensors can require grad, got dtype {data.dtype}")
        self.data = data
        self.requires_grad = bool(requires_grad)
        self.grad = None
        self._ctx = None  # the Context of the Function that produced this tensor (None for leaves)

    # --- what it is -----------------------------------------------------------------------------
    shape = property(lambda self: self.data.shape)
    dtype = property(lambda self: self.data.dtype)
    ndim = property(lambda self: self.data.ndim)
    size = property(lambda self: self.data.size)
    is_leaf = property(lambda self: self._ctx is None)

    def __len__(self):
        return len(self.data)

    def __repr__(self):
        grad = ", requires_grad=True" if self.requires_grad else ""
        return f"Tensor({np.array2string(self.data, precision=4, threshold=20)}, dtype={self.dtype}{grad})"

    def item(self):
        return self.data.item()

    def numpy(self):
        return self.data

    def detach(self):
        """The same data, cut from the graph."""
        return Tensor(self.data)

    def requires_grad_(self, flag=True):
        if flag and not np.issubdtype(self.dtype, np.floating):
            raise ValueError(f"requires_grad_: dtype {self.dtype} cannot require grad")
        self.requires_grad = bool(flag)
        return self

    def zero_grad(self):
        self.grad = None

    # --- backward ---------------------------------------------------------------------------------
    def backward(self, grad=None, retain_graph=False):
        """Fill `.grad` of every leaf this tensor depends on with d(self)/d(leaf), accumulating.

        `grad` is d(loss)/d(self); it may be omitted only when self holds a single number.
        As in PyTorch, each Function lets go of the arrays it saved for backward as soon as its backward
        has run, so a finished graph holds no activations (a training loop whose old `loss` is still
        referenced during the next forward does not keep two steps' activations). retain_graph=True
        keeps them, for a second backward() through the same graph.
        """
        if not self.requires_grad:
            raise RuntimeError("backward: this tensor does not require grad, so no graph leads to it; "
                               "create the leaves with requires_grad=True (and not under no_grad())")
        if grad is None:
            if self.size != 1:
                raise RuntimeError(f"backward: output has shape {self.shape}, not a single number; pass "
                                   "grad= (an array of that shape), or reduce it first, e.g. y.sum().backward()")
            grad = np.ones_like(self.data)
        grad = np.asarray(grad.data if isinstance(grad, Tensor) else grad, dtype=self.dtype)
        if grad.shape != self.shape:
            raise ValueError(f"backward: grad has shape {grad.shape}, expected the output's shape {self.shape}")

        order = topological_order(self)
        if any(node._ctx is not None and node._ctx.freed for node in order):  # checked before any work
            raise RuntimeError("backward: part of this graph was already used by a backward() that freed its "
                               "saved arrays; to go backward through a graph twice, pass retain_graph=True to "
                               "every backward() but the last (as in PyTorch). Nothing was accumulated.")
        grads = {id(self): grad}  # d(self)/d(node), keyed by id(node), filled as we walk back
        while order:  # from the output back to the leaves; popping lets each node go once it is done
            node = order.pop()
            g = grads.pop(id(node), None)
            if g is None:
                continue
            if node._ctx is None:  # a leaf: accumulate (never overwrite) so two backwards add up
                # np.array/np.asarray keep .grad an ndarray (0-d arithmetic returns NumPy scalars)
                node.grad = np.array(g) if node.grad is None else np.asarray(node.grad + g)
                continue
            ctx = node._ctx
            input_grads = ctx.function.backward(ctx, g)
            if not isinstance(input_grads, tuple):
                input_grads = (input_grads,)
            if len(input_grads) != len(ctx.inputs):
                raise RuntimeError(f"{ctx.function.__name__}.backward returned {len(input_grads)} gradients "
                                   f"for {len(ctx.inputs)} inputs")
            for inp, g_in in zip(ctx.inputs, input_grads):
                if g_in is None or not inp.requires_grad:
                    continue
                if g_in.shape != inp.shape:
                    raise RuntimeError(f"{ctx.function.__name__}.backward returned a gradient of shape "
                                       f"{g_in.shape} for an input of shape {inp.shape}")
                g_in = g_in.astype(inp.dtype, copy=False)
                grads[id(inp)] = grads[id(inp)] + g_in if id(inp) in grads else g_in
            if not retain_graph:
                ctx.free()  # its saved arrays, and its inputs (whose data nobody else may need)

    # --- operators (each one line: the work is in the Functions below) ----------------------------
    def _lift(self, other):
        """Python numbers take this tensor's dtype (so float32 stays float32); arrays keep theirs."""
        if isinstance(other, Tensor):
            return other
        if isinstance(other, (int, float)):
            return Tensor(np.asarray(other, dtype=self.dtype))
        return Tensor(other)

    def __add__(self, other): return Add.apply(self, self._lift(other))
    def __radd__(self, other): return Add.apply(self._lift(other), self)
    def __sub__(self, other): return Sub.apply(self, self._lift(other))
    def __rsub__(self, other): return Sub.apply(self._lift(other), self)
    def __mul__(self, other): return Mul.apply(self, self._lift(other))
    def __rmul__(self, other): return Mul.apply(self._lift(other), self)
    def __truediv__(self, other): return Div.apply(self, self._lift(other))
    def __rtruediv__(self, other): return Div.apply(self._lift(other), self)
    def __pow__(self, other): return Pow.apply(self, self._lift(other))
    def __rpow__(self, other): return Pow.apply(self._lift(other), self)
    def __matmul__(self, other): return MatMul.apply(self, self._lift(other))
    def __rmatmul__(self, other): return MatMul.apply(self._lift(other), self)
    def __neg__(self): return Neg.apply(self)

    # Comparisons give plain boolean arrays: they have no gradient. Tensors hash by identity.
    def __lt__(self, other): return self.data < _array(other)
    def __le__(self, other): return self.data <= _array(other)
    def __gt__(self, other): return self.data > _array(other)
    def __ge__(self, other): return self.data >= _array(other)
    def __eq__(self, other): return self.data == _array(other)
    def __ne__(self, other): return self.data != _array(other)
    __hash__ = object.__hash__

    # --- methods ----------------------------------------------------------------------------------
    def sum(self, axis=None, keepdims=False): return Sum.apply(self, axis=axis, keepdims=keepdims)
    def mean(self, axis=None, keepdims=False): return Mean.apply(self, axis=axis, keepdims=keepdims)
    def max(self, axis=None, keepdims=False): return Max.apply(self, axis=axis, keepdims=keepdims)
    def exp(self): return Exp.apply(self)
    def log(self): return Log.apply(self)
    def tanh(self): return Tanh.apply(self)
    def relu(self): return ReLU.apply(self)
    def sqrt(self): return Sqrt.apply(self)

    def reshape(self, *shape):
        if len(shape) == 1 and isinstance(shape[0], (tuple, list)):
            shape = tuple(shape[0])
        return Reshape.apply(self, shape=shape)

    def transpose(self, *axes):
        if len(axes) == 1 and isinstance(axes[0], (tuple, list)):
            axes = tuple(axes[0])
        return Transpose.apply(self, axes=axes or None)

    T = property(lambda self: self.transpose())

    def __getitem__(self, index):
        return GetItem.apply(self, index=_plain_index(index))


def _array(x):
    return x.data if isinstance(x, Tensor) else x


def _plain_index(index):
    """Tensors inside an index become their arrays (so x[idx_tensor] works like x[idx_array])."""
    if isinstance(index, tuple):
        return tuple(_array(i) for i in index)
    return _array(index)


def tensor(data, requires_grad=False, dtype=None):
    """Shorthand for Tensor(...)."""
    return Tensor(data, requires_grad=requires_grad, dtype=dtype)


def topological_order(root):
    """Every tensor `root` depends on (that requires grad), each listed after all of its inputs.

    Iterative depth-first search: a node is appended once all of its inputs are. A stack of
    (node, inputs_done) pairs replaces recursion, so a graph thousands of ops deep is fine.
    """
    order, visited = [], set()
    stack = [(root, False)]
    while stack:
        node, inputs_done = stack.pop()
        if inputs_done:
            order.append(node)
            continue
        if id(node) in visited:
            continue
        visited.add(id(node))
        stack.append((node, True))  # comes back to it after its inputs
        if node._ctx is not None:
            for inp in node._ctx.inputs:
                if inp.requires_grad and id(inp) not in visited:
                    stack.append((inp, False))
    return order


# ----------------------------------------------------------------------------------------------------
# 5. The ops. Each backward receives g = dL/d(out) and returns dL/d(input) for every input.
# ----------------------------------------------------------------------------------------------------

# --- elementwise, with broadcasting -----------------------------------------------------------------


class Add(Function):
    @staticmethod
    def forward(ctx, a, b):
        _broadcast_shape("add", a, b)
        ctx.shapes = a.shape, b.shape
        return a + b

    @staticmethod
    def backward(ctx, g):  # d(a+b)/da = d(a+b)/db = 1
        a_shape, b_shape = ctx.shapes
        return unbroadcast(g, a_shape), unbroadcast(g, b_shape)


class Sub(Function):
    @staticmethod
    def forward(ctx, a, b):
        _broadcast_shape("sub", a, b)
        ctx.shapes = a.shape, b.shape
        return a - b

    @staticmethod
    def backward(ctx, g):
        a_shape, b_shape = ctx.shapes
        return unbroadcast(g, a_shape), unbroadcast(-g, b_shape)


class Mul(Function):
    @staticmethod
    def forward(ctx, a, b):
        _broadcast_shape("mul", a, b)
        ctx.save_for_backward(a, b)
        return a * b

    @staticmethod
    def backward(ctx, g):  # d(ab)/da = b, d(ab)/db = a
        a, b = ctx.saved
        return unbroadcast(g * b, a.shape), unbroadcast(g * a, b.shape)


class Div(Function):
    @staticmethod
    def forward(ctx, a, b):
        _broadcast_shape("div", a, b)
        ctx.save_for_backward(a, b)
        return a / b

    @staticmethod
    def backward(ctx, g):  # d(a/b)/da = 1/b, d(a/b)/db = -a/b^2
        a, b = ctx.saved
        return unbroadcast(g / b, a.shape), unbroadcast(-g * a / (b * b), b.shape)


class Pow(Function):
    @staticmethod
    def forward(ctx, a, b):
        _broadcast_shape("pow", a, b)
        out = a**b
        ctx.save_for_backward(a, b, out)
        return out

    @staticmethod
    def backward(ctx, g):  # d(a^b)/da = b a^(b-1), d(a^b)/db = a^b log a (needed only if b is trained)
        a, b, out = ctx.saved
        grad_a = unbroadcast(g * b * a ** (b - 1), a.shape)
        grad_b = unbroadcast(g * out * np.log(a), b.shape) if ctx.needs_input_grad[1] else None
        return grad_a, grad_b


class Neg(Function):
    @staticmethod
    def forward(ctx, a):
        return -a

    @staticmethod
    def backward(ctx, g):
        return -g


class Exp(Function):
    @staticmethod
    def forward(ctx, a):
        out = np.exp(a)
        ctx.save_for_backward(out)
        return out

    @staticmethod
    def backward(ctx, g):  # d(e^a)/da = e^a
        (out,) = ctx.saved
        return g * out


class Log(Function):
    @staticmethod
    def forward(ctx, a):
        ctx.save_for_backward(a)
        return np.log(a)

    @staticmethod
    def backward(ctx, g):  # d(log a)/da = 1/a
        (a,) = ctx.saved
        return g / a


class Tanh(Function):
    @staticmethod
    def forward(ctx, a):
        out = np.tanh(a)
        ctx.save_for_backward(out)
        return out

    @staticmethod
    def backward(ctx, g):  # d(tanh a)/da = 1 - tanh(a)^2
        (out,) = ctx.saved
        return g * (1 - out * out)


class ReLU(Function):
    @staticmethod
    def forward(ctx, a):
        ctx.save_for_backward(a > 0)
        return np.maximum(a, 0)

    @staticmethod
    def backward(ctx, g):  # 1 where a > 0, else 0 (we pick 0 at the kink a = 0)
        (positive,) = ctx.saved
        return g * positive


class Sqrt(Function):
    @staticmethod
    def forward(ctx, a):
        out = np.sqrt(a)
        ctx.save_for_backward(out)
        return out

    @staticmethod
    def backward(ctx, g):  # d(sqrt a)/da = 1 / (2 sqrt a)
        (out,) = ctx.saved
        return g / (2 * out)


# --- matmul -----------------------------------------------------------------------------------------


class MatMul(Function):
    """a @ b for 2-D matrices and stacks of them, (..., n, k) @ (..., k, m) -> (..., n, m).

    The batch dimensions (...) broadcast like any elementwise op, so the backward unbroadcasts them.
    """

    @staticmethod
    def forward(ctx, a, b):
        if a.ndim < 2 or b.ndim < 2:
            raise ValueError(f"matmul: both operands need at least 2 dimensions, got shapes {a.shape} "
                             f"and {b.shape}; reshape a vector v to (1, n) or (n, 1) first")
        if a.shape[-1] != b.shape[-2]:
            raise ValueError(f"matmul: shapes {a.shape} and {b.shape} do not align: "
                             f"a's last dimension {a.shape[-1]} != b's second-to-last {b.shape[-2]}")
        try:
            np.broadcast_shapes(a.shape[:-2], b.shape[:-2])
        except ValueError:
            raise ValueError(f"matmul: batch dimensions of {a.shape} and {b.shape} do not broadcast") from None
        ctx.save_for_backward(a, b)
        return np.matmul(a, b)

    @staticmethod
    def backward(ctx, g):  # out = a b  =>  dL/da = g b^T,  dL/db = a^T g
        a, b = ctx.saved
        grad_a = unbroadcast(np.matmul(g, np.swapaxes(b, -1, -2)), a.shape)
        grad_b = unbroadcast(np.matmul(np.swapaxes(a, -1, -2), g), b.shape)
        return grad_a, grad_b


# --- reductions -------------------------------------------------------------------------------------


def _normalize_axes(axis, ndim):
    """None -> every axis; int or tuple (negative allowed) -> a sorted tuple of non-negative axes."""
    if axis is None:
        return tuple(range(ndim))
    axes = (axis,) if isinstance(axis, (int, np.integer)) else tuple(axis)
    out = []
    for ax in axes:
        if not -ndim <= ax < ndim:
            raise ValueError(f"axis {ax} is out of range for a tensor with {ndim} dimensions")
        out.append(ax % ndim)
    return tuple(sorted(out))


def _expand_to(g, axes, keepdims, shape):
    """Put back the reduced axes of a reduction's gradient so it broadcasts against the input."""
    if not keepdims:
        g = np.expand_dims(g, axes)
    return np.broadcast_to(g, shape)


class Sum(Function):
    @staticmethod
    def forward(ctx, a, axis=None, keepdims=False):
        ctx.axes, ctx.keepdims, ctx.shape = _normalize_axes(axis, a.ndim), keepdims, a.shape
        return np.sum(a, axis=ctx.axes, keepdims=keepdims)

    @staticmethod
    def backward(ctx, g):  # every summed element contributed with weight 1
        return _expand_to(g, ctx.axes, ctx.keepdims, ctx.shape).copy()


class Mean(Function):
    @staticmethod
    def forward(ctx, a, axis=None, keepdims=False):
        ctx.axes, ctx.keepdims, ctx.shape = _normalize_axes(axis, a.ndim), keepdims, a.shape
        ctx.count = int(np.prod([a.shape[ax] for ax in ctx.axes]))
        return np.mean(a, axis=ctx.axes, keepdims=keepdims)

    @staticmethod
    def backward(ctx, g):  # each of the `count` elements contributed with weight 1/count
        return _expand_to(g / ctx.count, ctx.axes, ctx.keepdims, ctx.shape).copy()


class Max(Function):
    @staticmethod
    def forward(ctx, a, axis=None, keepdims=False):
        ctx.axes, ctx.keepdims = _normalize_axes(axis, a.ndim), keepdims
        out = np.max(a, axis=ctx.axes, keepdims=True)
        ctx.save_for_backward(a == out)  # where the maximum sits (ties share it)
        return out if keepdims else np.squeeze(out, axis=ctx.axes)

    @staticmethod
    def backward(ctx, g):  # the gradient flows to the maximum; k tied maxima get 1/k each
        (is_max,) = ctx.saved
        share = is_max / is_max.sum(axis=ctx.axes, keepdims=True)
        return _expand_to(g, ctx.axes, ctx.keepdims, is_max.shape) * share


# --- shape ops and indexing -------------------------------------------------------------------------


class Reshape(Function):
    @staticmethod
    def forward(ctx, a, shape):
        ctx.shape = a.shape
        try:
            return a.reshape(shape)
        except ValueError:
            raise ValueError(f"reshape: cannot reshape a tensor of shape {a.shape} ({a.size} elements) "
                             f"into {tuple(shape)}") from None

    @staticmethod
    def backward(ctx, g):
        return g.reshape(ctx.shape)


class Transpose(Function):
    @staticmethod
    def forward(ctx, a, axes=None):
        axes = tuple(reversed(range(a.ndim))) if axes is None else tuple(ax % a.ndim for ax in axes)
        if sorted(axes) != list(range(a.ndim)):
            raise ValueError(f"transpose: axes {axes} are not a permutation of 0..{a.ndim - 1}")
        ctx.axes = axes
        return np.transpose(a, axes)

    @staticmethod
    def backward(ctx, g):  # undo the permutation with its inverse
        return np.transpose(g, np.argsort(ctx.axes))


class GetItem(Function):
    @staticmethod
    def forward(ctx, a, index):
        ctx.index, ctx.shape = index, a.shape
        return a[index]

    @staticmethod
    def backward(ctx, g):
        grad = np.zeros(ctx.shape, dtype=g.dtype)
        if _is_basic_index(ctx.index):  # slices and ints pick each element at most once: plain assignment
            grad[ctx.index] = g
        else:  # integer arrays may repeat an index; add.at (not grad[index] += g) makes repeats add up
            np.add.at(grad, ctx.index, g)
        return grad


def _is_basic_index(index):
    """True for indices made only of ints, slices, None and ...: they never select an element twice."""
    parts = index if isinstance(index, tuple) else (index,)
    return all(isinstance(p, (int, np.integer, slice)) or p is None or p is Ellipsis for p in parts)


class Concatenate(Function):
    @staticmethod
    def forward(ctx, *arrays, axis=0):
        ctx.axis = axis
        ctx.bounds = np.cumsum([a.shape[axis] for a in arrays])[:-1]
        try:
            return np.concatenate(arrays, axis=axis)
        except ValueError as err:
            raise ValueError(f"concatenate: shapes {[a.shape for a in arrays]} along axis {axis}: {err}") from None

    @staticmethod
    def backward(ctx, g):  # each input gets back its own slice
        return tuple(np.split(g, ctx.bounds, axis=ctx.axis))


class Stack(Function):
    @staticmethod
    def forward(ctx, *arrays, axis=0):
        ctx.axis = axis
        try:
            return np.stack(arrays, axis=axis)
        except ValueError as err:
            raise ValueError(f"stack: shapes {[a.shape for a in arrays]}: {err}") from None

    @staticmethod
    def backward(ctx, g):
        return tuple(np.moveaxis(g, ctx.axis, 0))


def concatenate(tensors, axis=0):
    """Join tensors along an existing axis (np.concatenate)."""
    return Concatenate.apply(*tensors, axis=axis)


def stack(tensors, axis=0):
    """Join tensors along a new axis (np.stack)."""
    return Stack.apply(*tensors, axis=axis)


def split(x, indices_or_sections, axis=0):
    """Split like np.split, returning Tensors; each piece is a slice, so gradients flow back."""
    size = x.shape[axis]
    if isinstance(indices_or_sections, int):
        if size % indices_or_sections:
            raise ValueError(f"split: axis {axis} of size {size} does not divide into {indices_or_sections} equal parts")
        step = size // indices_or_sections
        bounds = list(range(step, size, step))
    else:
        bounds = list(indices_or_sections)
    starts, stops = [0] + bounds, bounds + [size]
    pieces = []
    for start, stop in zip(starts, stops):
        index = [slice(None)] * x.ndim
        index[axis] = slice(start, stop)
        pieces.append(x[tuple(index)])
    return pieces
