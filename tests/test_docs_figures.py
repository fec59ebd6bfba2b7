"""Every figure the lecture notes and notebooks 01-05 quote about the library, recomputed and compared with the text.

Map of this file:
  quoted(), number(), assert_rounds_to()   find a figure in a note or a notebook's markdown by the words around
                                            it, and check that the recomputed value rounds to it
  1. transformer.md, notebook 03   parameter counts, init statistics, the initial loss, error messages
  2. autograd.md, notebooks 01-02  worked example, gradcheck's figures, graph size, float32 digits and spacing
  3. kernels.md, notebook 04       FLOP/byte, tanh and exp error bounds, NumPy's tanh, row-block work, constants
  4. optim.md                      momentum, bias correction, optimizer memory
  5. data.md, pretraining.md, notebook 05   corpus counts, tokenizers, overlaps, baselines
A figure is found by a regex anchored on nearby words, so a change in the code or in the text fails here;
change both together. Timings are not checked: they carry the command that prints them (benchmarks/).
The corpus figures come from the frozen snapshot of CPython 3.11.7's text, so they are checked on every Python.
No training and no notebook execution: the whole file takes seconds (one BPE training is the slowest part).
"""

import functools
import inspect
import json
import math
import re
from pathlib import Path

import numba
import numpy as np
import pytest

import tinyft
from tinyft import Tensor, data, gradcheck, kernels
from tinyft import functional as F
from tinyft.autograd import topological_order
from tinyft.kernels import _backend, _math, adamw, attention, layernorm, matmul
from tinyft.nn import GPT, GPTConfig
from tinyft.optim import SGD, AdamW
from tinyft.pretrain import PretrainConfig
from tinyft.tokenizers import BPETokenizer, CharTokenizer

REPO = Path(__file__).resolve().parent.parent


# ----------------------------------------------------------------------------------------------------
# Finding and comparing figures
# ----------------------------------------------------------------------------------------------------


@functools.lru_cache(maxsize=None)
def text_of(name):
    """A note's text, or a notebook's markdown cells joined (outputs are computed, so only prose is checked)."""
    path = REPO / name
    if path.suffix == ".ipynb":
        cells = json.loads(path.read_text(encoding="utf-8"))["cells"]
        return "\n\n".join("".join(c["source"]) for c in cells if c["cell_type"] == "markdown")
    return path.read_text(encoding="utf-8")


def quoted(name, pattern, group=1):
    """The text a regex captures in a note; fails (naming the note) when the sentence is gone."""
    found = re.search(pattern, text_of(name), re.S)
    assert found, f"{name}: no text matches {pattern!r}; if the note changed, update this check with it"
    return found.group(group)


_SUPERSCRIPT = str.maketrans("⁰¹²³⁴⁵⁶⁷⁸⁹⁻", "0123456789-")


def number(text):
    """'842,496', '3.26', '2.9e-7', '6\\times10^{-8}', '6×10^-8', '10⁻³⁵' -> (value, half of its last digit)."""
    text = text.strip().replace(",", "").replace("$", "").replace("\\times", "×").replace("{", "").replace("}", "")
    text = text.translate(_SUPERSCRIPT).replace(" ", "").rstrip(".")  # a figure may end a sentence
    mantissa, exponent = text, 0
    if "e" in text:
        mantissa, exponent = text.split("e")
    elif "×10^" in text:
        mantissa, exponent = text.split("×10^")
    elif text.startswith("10^"):
        mantissa, exponent = "1", text[3:]
    exponent = int(exponent)
    decimals = len(mantissa.split(".")[1]) if "." in mantissa else 0
    return float(mantissa) * 10.0**exponent, 0.5 * 10.0 ** (exponent - decimals)


def assert_rounds_to(value, text, what):
    """value, rounded to the digits the text shows, equals the text's figure."""
    figure, half_digit = number(text)
    assert abs(value - figure) <= half_digit * (1 + 1e-9), f"{what}: computed {value!r}, the text says {text}"


# ----------------------------------------------------------------------------------------------------
# Small computations several checks share
# ----------------------------------------------------------------------------------------------------

WORKED = dict(vocab_size=256, block_size=128, n_layer=4, n_head=4, n_embd=128)  # transformer.md's example


@functools.lru_cache(maxsize=None)
def worked_model():
    tinyft.manual_seed(0)
    return GPT(GPTConfig(**WORKED))


def formula_count(V, T, L, C, bias=True):
    return V * C + T * C + L * (12 * C * C + 13 * C) + 2 * C if bias else V * C + T * C + L * (12 * C * C + 2 * C) + C


@functools.lru_cache(maxsize=None)
def graph_of_default_gpt():
    """The graph of one forward of PretrainConfig's default GPT, and the run_parallel calls of its backward."""
    cfg = PretrainConfig()
    tinyft.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=112, block_size=cfg.block_size, n_layer=cfg.n_layer, n_head=cfg.n_head,
                          n_embd=cfg.n_embd))
    idx = np.random.default_rng(0).integers(0, 112, (cfg.batch_size, cfg.block_size))
    calls = []
    real = _backend.run_parallel

    def counting(tasks, blas=True):
        calls.append(len(tasks))
        return real(tasks, blas)

    with pytest.MonkeyPatch.context() as patch:  # every module that runs products on tinyft's threads
        for module in (_backend, matmul, attention):
            patch.setattr(module, "run_parallel", counting, raising=False)
        with kernels.use("numba"):
            _, loss = model(idx, idx)
            order = topological_order(loss)
            loss.backward()
    return order, len(calls), model


def central_difference_errors(dtype):
    """notebooks/02's experiment: |central difference - exact| of tanh(x) e^x at 0.7 over its 60 steps."""
    def f(t):
        return t.tanh() * t.exp()

    x0 = 0.7
    xt = Tensor(np.array(x0), requires_grad=True)
    f(xt).backward()
    exact = float(xt.grad)
    epsilons = np.logspace(-13, -0.5, 60)
    errors = []
    for eps in epsilons:
        x, e = dtype(x0), dtype(eps)
        with tinyft.no_grad():
            up = f(Tensor(np.array(x + e, dtype=dtype))).data
            down = f(Tensor(np.array(x - e, dtype=dtype))).data
        errors.append(abs(float((up - down) / (dtype(2) * e)) - exact))
    return epsilons, np.array(errors), exact


def correct_digits_at_best_step(dtype):
    """-log10 of the median relative error over the steps within 10x of u^(1/3) (notebook 02's 'typical')."""
    epsilons, errors, exact = central_difference_errors(dtype)
    best = np.finfo(dtype).eps ** (1 / 3)
    near = errors[(epsilons >= best / 10) & (epsilons <= best * 10)]
    return -np.log10(np.median(near) / abs(exact))


# ----------------------------------------------------------------------------------------------------
# 1. transformer.md and notebook 03
# ----------------------------------------------------------------------------------------------------


def test_transformer_error_messages_are_the_ones_quoted():
    message = quoted("docs/transformer.md", r"\(for example `(n_embd=10 must be divisible by\s+n_head=3)`\)")
    with pytest.raises(ValueError) as err:
        GPTConfig(vocab_size=8, block_size=8, n_layer=1, n_head=3, n_embd=10)
    assert " ".join(message.split()) in str(err.value)
    message = quoted("docs/transformer.md",
                     r'\("(idx has T=300 positions but block_size is 256; crop it: idx\[:, -256:\])"\)')
    tinyft.manual_seed(0)
    with pytest.raises(ValueError) as err:
        GPT(GPTConfig(vocab_size=8, block_size=256, n_layer=1, n_head=1, n_embd=4))(np.zeros((1, 300), np.int64))
    assert message in str(err.value)


def test_worked_example_table_counts_the_models_own_parameters():
    model, C, L = worked_model(), WORKED["n_embd"], WORKED["n_layer"]
    params = dict(model.named_parameters())
    note = "docs/transformer.md"
    assert_rounds_to(params["transformer.wte.weight"].size,
                     quoted(note, r"\| wte \(= lm_head\), 256 · 128 +\| ([\d,]+)"), "wte")
    assert_rounds_to(params["transformer.wpe.weight"].size, quoted(note, r"\| wpe, 128 · 128 +\| ([\d,]+)"), "wpe")
    block = {n: p for n, p in params.items() if n.startswith("transformer.h.0.")}
    matrices = sum(p.size for p in block.values() if p.ndim == 2)
    vectors = sum(p.size for p in block.values() if p.ndim == 1)
    row = r"\| one Block, 12·128² \+ 13·128 +\| ([\d,]+) \+ ([\d,]+) = ([\d,]+)"
    assert_rounds_to(matrices, quoted(note, row, 1), "12C^2")
    assert_rounds_to(vectors, quoted(note, row, 2), "13C")
    assert_rounds_to(matrices + vectors, quoted(note, row, 3), "one Block")
    blocks = sum(p.size for n, p in params.items() if n.startswith("transformer.h."))
    assert_rounds_to(blocks, quoted(note, r"\| 4 Blocks +\| ([\d,]+)"), "4 Blocks")
    ln_f = sum(p.size for n, p in params.items() if n.startswith("transformer.ln_f."))
    assert_rounds_to(ln_f, quoted(note, r"\| ln_f, 2 · 128 +\| ([\d,]+)"), "ln_f")
    assert_rounds_to(model.num_parameters(), quoted(note, r"\| \*\*total\*\* +\| \*\*([\d,]+)\*\*"), "total")
    assert_rounds_to(model.num_parameters(), quoted(note, r"`model.num_parameters\(\)` prints ([\d,]+)"), "prints")
    tinyft.manual_seed(0)
    no_bias = GPT(GPTConfig(**WORKED, bias=False)).num_parameters()
    assert_rounds_to(no_bias, quoted(note, r"with `bias=False` it is ([\d,]+)"), "bias=False")
    sd = model.state_dict()
    assert_rounds_to(len(sd), quoted(note, r"`state_dict\(\)` has (\d+) entries"), "state_dict entries")
    assert_rounds_to(len(params), quoted(note, r"entries: (\d+) Parameters plus"), "Parameters")
    embeddings = params["transformer.wte.weight"].size + params["transformer.wpe.weight"].size
    assert_rounds_to(100 * embeddings / model.num_parameters(),
                     quoted(note, r"the embeddings \(wte \+ wpe\) are still about (\d+)%"), "embedding share")
    mlp = sum(p.size for n, p in block.items() if ".mlp." in n and p.ndim == 2)
    assert (mlp, matrices) == (8 * C * C, 12 * C * C)  # "the MLP holds two thirds ... (8C² of 12C²)"
    assert "two thirds of a Block's weight matrices (8C² of 12C²)" in text_of(note)
    c_proj_std = float(params["transformer.h.0.attn.c_proj.weight"].data.std())
    quote = quoted(note, r"For L = 4 the c_proj standard deviation is 0\.02 / sqrt\(8\) ≈ ([\d.]*\d)")
    assert_rounds_to(0.02 / math.sqrt(2 * L), quote, "0.02 / sqrt(2L)")
    assert c_proj_std == pytest.approx(number(quote)[0], rel=0.03)  # 16,384 draws: the sample std is within 3%


def test_initial_loss_is_ln_v_plus_half_the_logit_variance():
    model, note = worked_model(), "docs/transformer.md"
    losses, stds = [], []
    with tinyft.no_grad():
        for seed in range(4):  # random ids and targets, four batches of 16 x 128
            rng = np.random.default_rng(seed)
            idx, targets = (rng.integers(0, WORKED["vocab_size"], (16, WORKED["block_size"])) for _ in range(2))
            logits, loss = model(idx, targets)
            losses.append(loss.item())
            stds.append(float(logits.data.std()))
    sigma = quoted(note, r"σ ≈ 0\.02·sqrt\(128\) = ([\d.]*\d)")
    assert_rounds_to(0.02 * math.sqrt(WORKED["n_embd"]), sigma, "0.02 sqrt(C)")
    assert_rounds_to(np.mean(stds), sigma, "measured logit standard deviation")
    row = r"so ln 256 \+ σ²/2 ≈ ([\d.]*\d) \+ ([\d.]*\d) ≈ ([\d.]*\d), which is what a fresh model"
    assert_rounds_to(math.log(256), quoted(note, row, 1), "ln 256")
    assert_rounds_to(0.02**2 * WORKED["n_embd"] / 2, quoted(note, row, 2), "sigma^2 / 2")
    assert_rounds_to(math.log(256) + np.mean(stds) ** 2 / 2, quoted(note, row, 3), "ln V + sigma^2/2")
    assert_rounds_to(np.mean(losses), quoted(note, row, 3), "measured initial loss")


def test_notebook_03_parameter_claims():
    nb = "notebooks/03_transformer.ipynb"
    assert "$12C^2 + 13C$" in text_of(nb)
    small = GPTConfig(vocab_size=65, block_size=16, n_layer=2, n_head=4, n_embd=32)
    tinyft.manual_seed(0)
    model = GPT(small)
    per_block = sum(p.size for n, p in model.named_parameters() if n.startswith("transformer.h.0."))
    assert per_block == 12 * 32**2 + 13 * 32
    assert_rounds_to(worked_model().num_parameters(), quoted(nb, r"counting-parameters\) \(([\d,]+)\)"), "842,496")
    shares = []  # the notebook's character-vocabulary configs: the Blocks' share of the parameters
    for V, T, L, C, bias in [(65, 16, 2, 32, True), (256, 128, 4, 128, True), (256, 128, 4, 128, False),
                             (512, 256, 6, 192, True)]:
        blocks = L * (12 * C * C + (13 if bias else 2) * C)
        shares.append(blocks / formula_count(V, T, L, C, bias))
    assert min(shares) > number(quoted(nb, r"the Blocks hold over (\d+)% of the parameters"))[0] / 100
    assert "almost a third" in text_of(nb)
    gpt2_wte = 50257 * 768 / formula_count(50257, 1024, 12, 768)
    assert 0.28 < gpt2_wte < 1 / 3, gpt2_wte
    std = float(model.transformer.h[0].attn.c_attn.weight.data.std())
    quote = quoted(nb, r"the weights are small \(standard deviation ([\d.]*\d)\)")
    assert std == pytest.approx(number(quote)[0], rel=0.05)
    quote = quoted(nb, r"float32 rounding level \(about \$10\^\{-(\d+)\}\$\)")
    assert round(math.log10(np.finfo(np.float32).eps)) == -int(quote)


# ----------------------------------------------------------------------------------------------------
# 2. autograd.md and notebooks 01-02
# ----------------------------------------------------------------------------------------------------


def test_autograd_worked_example_and_gradcheck_message():
    note = "docs/autograd.md"
    x = Tensor(np.array([[1.0, 2.0], [0.5, -1.0]]), requires_grad=True)
    w = Tensor(np.array([[0.5, -0.5], [1.0, 0.25], [0.0, 1.0]]), requires_grad=True)
    loss = F.cross_entropy(F.linear(x, w), np.array([2, 0]))
    assert_rounds_to(loss.item(), quoted(note, r"print\(round\(loss\.item\(\), 4\)\)\s+# ([\d.]*\d)"), "worked loss")

    class SigmoidOff(tinyft.Function):  # the note's Sigmoid with its backward multiplied by 1.01
        @staticmethod
        def forward(ctx, a):
            out = 1 / (1 + np.exp(-a))
            ctx.save_for_backward(out)
            return out

        @staticmethod
        def backward(ctx, g):
            (out,) = ctx.saved
            return 1.01 * g * out * (1 - out)

    with pytest.raises(tinyft.GradcheckError) as err:
        gradcheck(SigmoidOff.apply, [Tensor(np.linspace(-3, 3, 7), requires_grad=True)])
    pattern = r"analytic gradient ([\d.]*\d) but\s+finite difference ([\d.]*\d)"
    got = re.search(pattern, str(err.value))
    assert_rounds_to(float(got.group(1)), quoted(note, pattern, 1), "analytic")
    assert_rounds_to(float(got.group(2)), quoted(note, pattern, 2), "finite difference")
    assert quoted(note, r"at index (\(\d+,\)): analytic") in str(err.value)


def test_autograd_shapes_and_unbroadcast_examples():
    note = "docs/autograd.md"
    a = Tensor(np.ones((2, 1, 3, 4)), requires_grad=True)
    b = Tensor(np.ones((5, 4, 2)), requires_grad=True)
    out = a @ b
    assert str(out.shape).replace(" ", "") == quoted(note, r"the output is `(\([\d, ]+\))`").replace(" ", "")
    g = np.ones(out.shape)
    assert str(np.matmul(g, np.swapaxes(b.data, -1, -2)).shape).replace(" ", "") == quoted(
        note, r"\$G B\^\\top\$ is `(\([\d, ]+\))`").replace(" ", "")
    assert str(np.matmul(np.swapaxes(a.data, -1, -2), g).shape).replace(" ", "") == quoted(
        note, r"\$A\^\\top G\$ is `(\([\d, ]+\))`").replace(" ", "")
    out.sum().backward()
    assert a.grad.shape == a.shape and b.grad.shape == b.shape
    a, b = Tensor(np.zeros((3, 1)), requires_grad=True), Tensor(np.zeros((1, 4)), requires_grad=True)
    (a + b).sum().backward()
    row = r"gives `a\.grad` full of (\d)s and `b\.grad` full of (\d)s"
    assert np.all(a.grad == int(quoted(note, row, 1))) and np.all(b.grad == int(quoted(note, row, 2)))
    chain = int(quoted(note, r"through a chain of (\d+) multiplications"))
    assert re.search(rf"\b{chain}\b|{chain // 1000}_{chain % 1000:03d}", (REPO / "tests/test_autograd.py").read_text())


def test_gradcheck_figures():
    note = "docs/autograd.md"
    signature = quoted(note, r"`gradcheck\(fn, inputs, ([^`]+)\)` in `tinyft/gradcheck.py`")
    defaults = {k: v.default for k, v in inspect.signature(gradcheck).parameters.items() if v.default is not v.empty}
    assert {k: number(v)[0] for k, v in (item.split("=") for item in signature.split(", "))} == defaults
    u64, u32, eps = np.finfo(np.float64).eps, np.finfo(np.float32).eps, defaults["eps"]
    assert_rounds_to(u64, quoted(note, r"In float64 \(\$u \\approx (2\.2 \\times 10\^\{-16\})\$\)"), "u float64")
    row = r"that is about \$(10\^\{-12\}) \+ (2 \\times 10\^\{-10\})\$"
    assert_rounds_to(eps**2, quoted(note, row, 1), "eps^2")
    assert_rounds_to(u64 / eps, quoted(note, row, 2), "u / eps")
    assert_rounds_to(u32, quoted(note, r"In float32\s+\(\$u \\approx (1\.2 \\times 10\^\{-7\})\$\)"), "u float32")
    assert_rounds_to(u32 / eps, quoted(note, r"the rounding term alone is about \$([\d.]*\d)\$ at"), "u32 / eps")
    assert_rounds_to(correct_digits_at_best_step(np.float32),
                     quoted(note, r"leaves about (\d+) significant digits"), "digits")
    # the chance that a wrong entry hides under the tolerance: P(|r_k| < tol/|delta|) for r_k ~ N(0, 1)
    ratio = int(quoted(note, r"one\s+draw in \d+ for \$\|\\delta\| = (\d+)\\,\\text\{tol\}\$"))
    odds = int(quoted(note, r"one\s+draw in (\d+) for"))
    assert_rounds_to(1 / math.erf(1 / ratio / math.sqrt(2)), str(odds), "1 / P(|r| < tol / delta)")
    # gradcheck's own TypeError quotes the same digits
    with pytest.raises(TypeError) as err:
        gradcheck(lambda t: t.tanh(), [Tensor(np.ones(3, np.float32), requires_grad=True)])
    best = re.search(r"keeps about (\d+) significant digits at its best step and\s+about (\d+) at eps", str(err.value))
    assert best, str(err.value)
    assert_rounds_to(correct_digits_at_best_step(np.float32), best.group(1), "TypeError: best step")
    assert_rounds_to(-math.log10(u32 / eps), best.group(2), "TypeError: at eps")


def test_notebook_02_figures():
    nb = "notebooks/02_gradcheck.ipynb"
    assert_rounds_to(np.finfo(np.float64).eps,
                     quoted(nb, r"numbers near 1: \$(2\.2\\times10\^\{-16\})\$ in float64"), "u64")
    assert_rounds_to(np.finfo(np.float32).eps, quoted(nb, r"\$(1\.2\\times10\^\{-7\})\$ in float32\)"), "u32")
    _, errors64, _ = central_difference_errors(np.float64)
    assert round(math.log10(errors64.min())) == -int(quoted(nb, r"In float64 it reaches about \$10\^\{-(\d+)\}\$"))
    spacing = float(np.spacing(np.float32(0.7)))
    assert spacing == 2.0 ** -int(quoted(nb, r"Float32 numbers near 0\.7 are \$2\^\{-(\d+)\}"))
    assert_rounds_to(spacing, quoted(nb, r"\\approx (6\\times10\^\{-8\})\$\s+apart"), "float32 spacing at 0.7")
    assert_rounds_to(spacing / 2, quoted(nb, r"half that spacing, \$\\epsilon \\approx (3\\times10\^\{-8\})\$"), "half")
    x, below, above = np.float32(0.7), np.float32(0.49 * spacing), np.float32(0.51 * spacing)
    assert x + below == x and x - below == x and x + above != x and x - above != x
    digits64, digits32 = correct_digits_at_best_step(np.float64), correct_digits_at_best_step(np.float32)
    assert "Float64 keeps roughly twice as many correct digits as float32" in text_of(nb)
    assert 1.6 < digits64 / digits32 < 2.6, (digits64, digits32)
    assert gradcheck.__defaults__[0] == number(quoted(nb, r"\(\$\\epsilon = (10\^\{-6\})\$\), and compares"))[0]
    defaults = {k: v.default for k, v in inspect.signature(gradcheck).parameters.items()}
    row = r"`atol=([\d.e-]+)`, `rtol=([\d.e-]+)` by default"
    assert (defaults["atol"], defaults["rtol"]) == (number(quoted(nb, row, 1))[0], number(quoted(nb, row, 2))[0])
    assert 2 * defaults["max_elements"] == int(quoted(nb, r"the cost stays about (\d+) forward passes per input"))
    assert f"`max_elements={defaults['max_elements']}`" in text_of(nb)

    def caught(delta):  # the notebook's scan: sqrt's backward scaled by (1 + delta)
        class Scaled(tinyft.Function):
            @staticmethod
            def forward(ctx, x):
                out = np.sqrt(x)
                ctx.save_for_backward(out)
                return out

            @staticmethod
            def backward(ctx, g):
                (out,) = ctx.saved
                return (1 + delta) * g / (2 * out)
        try:
            gradcheck(Scaled.apply, [Tensor(np.linspace(0.5, 2.0, 4), requires_grad=True)])
            return False
        except tinyft.GradcheckError:
            return True

    threshold = number(quoted(nb, r"caught once \$\\delta\$ is above about\s+\$(10\^\{-3\})\$"))[0]
    assert not caught(threshold / 3) and caught(threshold * 3)


def test_graph_size_of_the_default_gpt():
    order, handoffs, model = graph_of_default_gpt()
    functions = sum(1 for node in order if node._ctx is not None)
    leaves = len(order) - functions
    assert leaves == len(list(model.parameters()))
    row = r"records (\d+) nodes per step: (\d+) tensors made by Functions and its\s+(\d+) parameters as leaves"
    nb = "notebooks/01_autograd.ipynb"
    assert (len(order), functions, leaves) == tuple(int(quoted(nb, row, i)) for i in (1, 2, 3))
    row = (r"graph has\s+(\d+) nodes, (\d+) of them Functions \(each run "
           r"forward and backward\) and (\d+) parameter leaves")
    assert (len(order), functions, leaves) == tuple(int(quoted("docs/kernels.md", row, i)) for i in (1, 2, 3))
    assert handoffs == int(quoted("docs/kernels.md", r"thread hand-offs, (\d+) per step"))
    assert round(-math.log10(np.finfo(np.float64).eps)) == 16 == -int(
        quoted(nb, r"float64 rounding \(about \$10\^\{(-\d+)\}\$\)"))


# ----------------------------------------------------------------------------------------------------
# 3. kernels.md and notebook 04
# ----------------------------------------------------------------------------------------------------


def test_arithmetic_intensity_table():
    note = "docs/kernels.md"
    n, k, m = 2048, 128, 512
    flops, moved = 2 * n * k * m, 4 * (n * k + k * m + n * m)
    row = r"\| linear \(2048,128\)@\(128,512\) \| (\d+) M \| ([\d.]*\d) MB \| ~(\d+) \|"
    assert_rounds_to(flops / 1e6, quoted(note, row, 1), "linear FLOPs")
    assert_rounds_to(moved / 1e6, quoted(note, row, 2), "linear MB")
    assert_rounds_to(flops / moved, quoted(note, row, 3), "linear FLOP/byte")
    assert_rounds_to(flops / moved, quoted(note, r"At (\d+) FLOP/byte, memory is not the limit"), "At ... FLOP/byte")
    T, hd = 128, 32
    row = (r"\| attention scores per head \(128,32\)@\(32,128\) \| "
           r"([\d.]*\d) M \| (\d+) KB in, (\d+) KB out \| ~(\d+) \|")
    flops, bytes_in, bytes_out = 2 * T * hd * T, 4 * 2 * T * hd, 4 * T * T
    assert_rounds_to(flops / 1e6, quoted(note, row, 1), "scores FLOPs")
    assert_rounds_to(bytes_in / 1e3, quoted(note, row, 2), "scores in")
    assert_rounds_to(bytes_out / 1e3, quoted(note, row, 3), "scores out")
    assert_rounds_to(flops / (bytes_in + bytes_out), quoted(note, row, 4), "scores FLOP/byte")
    for name, (rows, cols) in (("layer norm", (2048, 128)), ("GELU", (2048, 512))):
        row = rf"\| {name} \({rows},{cols}\) \| ~([\d.]*\d) M \(~(\d+) per element\) \| ([\d.]*\d) MB \| ~([\d.]*\d) \|"
        per_element = int(quoted(note, row, 2))
        flops, moved = per_element * rows * cols, 2 * 4 * rows * cols  # read once, write once
        assert_rounds_to(flops / 1e6, quoted(note, row, 1), f"{name} FLOPs")
        assert_rounds_to(moved / 1e6, quoted(note, row, 3), f"{name} MB")
        assert_rounds_to(flops / moved, quoted(note, row, 4), f"{name} FLOP/byte")


def _tanh_loop(x):
    out = np.empty_like(x)
    for i in numba.prange(x.shape[0]):
        out[i] = _math.tanh(x[i], x)
    return out


def _exp_loop(x):
    out = np.empty_like(x)
    for i in numba.prange(x.shape[0]):
        out[i] = _math.exp_nonpositive(x[i], x)
    return out


# compiled as the kernels are (prange, tinyft's fast-math flags), without a disk cache
tanh_loop = numba.njit(parallel=True, fastmath=set(_backend.FASTMATH))(_tanh_loop)
exp_loop = numba.njit(parallel=True, fastmath=set(_backend.FASTMATH))(_exp_loop)


def float32_range(lo, hi):
    """Every float32 in [lo, hi), in order (their bit patterns are consecutive integers)."""
    return np.arange(np.float32(lo).view(np.int32), np.float32(hi).view(np.int32), dtype=np.int32).view(np.float32)


@pytest.mark.skipif(numba.config.DISABLE_JIT, reason="millions of elements: compiled only")
def test_float32_tanh_error_bound_and_where_it_reaches_one():
    note = "docs/kernels.md"
    row = r"at most ([\d.]*\de-\d+) absolute and ([\d.]*\d) ulp, both at u ≈ ([\d.]*\d)"
    # the worst case lies in [4, 8): check every float32 there, and a seeded sample of the rest of [1e-35, 10]
    lo, hi = np.float32(1e-35).view(np.int32), np.float32(10).view(np.int32)
    sample = np.random.default_rng(0).integers(lo, hi, 1 << 21, dtype=np.int32).view(np.float32)  # seed 0
    x = np.concatenate([float32_range(4, 8), sample])
    got, want = tanh_loop(x).astype(np.float64), np.tanh(x.astype(np.float64))
    error = np.abs(got - want)
    ulps = error / 2.0 ** (np.floor(np.log2(want)) - 23)  # the float32 spacing at the exact value
    assert_rounds_to(error.max(), quoted(note, row, 1), "absolute error")
    assert_rounds_to(ulps.max(), quoted(note, row, 2), "ulp error")
    assert_rounds_to(float(x[np.argmax(error)]), quoted(note, row, 3), "where")
    assert_rounds_to(float(x[np.argmax(ulps)]), quoted(note, row, 3), "where (ulp)")
    one = float(quoted(note, r"From \|u\| ≥ ([\d.]*\d) it returns exactly ±1"))
    assert one == pytest.approx(float(_math.TANH_ONE))
    tail = float32_range(8, 11)
    far = tail >= _math.TANH_ONE
    assert np.all(tanh_loop(tail)[far] == 1) and np.all(tanh_loop(-tail)[far] == -1)
    rounded = np.tanh(tail.astype(np.float64)).astype(np.float32)  # the correctly rounded float32 tanh
    assert_rounds_to(float(tail[rounded == 1].min()),
                     quoted(note, r"float32 tanh is ±1 from \|u\| ≈ ([\d.]*\d) on"), "9.01")
    quoted_numpy, installed = quoted(note, r"NumPy's float32 `np\.tanh` \(NumPy (\d+\.\d+)\)"), ".".join(np.__version__.split(".")[:2])
    if quoted_numpy != installed:  # e.g. Python 3.10, whose newest NumPy is 2.2: its tanh may round otherwise
        pytest.skip(f"the note quotes NumPy {quoted_numpy}'s float32 tanh; this is NumPy {installed} (tinyft's own "
                    "tanh was checked above)")
    numpy_one = float(quoted(note, r"for \|u\| up to (\d+) and exactly ±1 only from \d+ on"))
    assert float(tail[np.tanh(tail) == 1].min()) == numpy_one
    assert set(np.tanh(tail[(tail > 9.02) & (tail < numpy_one)]).tolist()) == {float(np.float32(1 - 2.0**-24))}


@pytest.mark.skipif(numba.config.DISABLE_JIT, reason="millions of elements: compiled only")
def test_float32_exp_error_bound():
    note = "docs/kernels.md"
    row = (r"Measured against float64\s+`exp` on (\d+) million points of "
           r"\[−([\d.]*\d), 0\]: relative error ≤ ([\d.]*\de-\d+)")
    u = np.linspace(-float(quoted(note, row, 2)), 0, int(quoted(note, row, 1)) * 10**6).astype(np.float32)
    want = np.exp(u.astype(np.float64))
    assert_rounds_to(float(np.max(np.abs(exp_loop(u) - want) / want)), quoted(note, row, 3), "exp relative error")


def test_kernel_constants_and_sizes_the_notes_quote():
    note, nb = "docs/kernels.md", "notebooks/04_kernels.ipynb"
    assert layernorm.ROWS_PER_CHUNK == int(quoted(note, r"`ROWS_PER_CHUNK = (\d+)`"))
    assert _backend.TASKS_PER_THREAD == int(quoted(note, r"`TASKS_PER_THREAD = (\d+)` blocks per thread"))
    assert attention.HEADS_PER_TASK == int(quoted(note, r"`HEADS_PER_TASK = (\d+)` heads"))
    assert attention.HEADS_PER_TASK == int(quoted(nb, r"over groups of (\d+) heads"))
    assert attention.ROW_BLOCK == int(quoted(note, r"per block of `ROW_BLOCK = (\d+)` query rows"))
    assert attention.ROW_BLOCK == int(quoted(nb, r"query rows in blocks of (\d+) need"))
    assert adamw.PARALLEL_MIN == 2 ** int(quoted(note, r"`PARALLEL_MIN = 2(\S+)` elements").translate(_SUPERSCRIPT))
    power = quoted(note, r"`PARALLEL_MIN_MACS = 2(\S+)` multiply-adds").translate(_SUPERSCRIPT)
    assert matmul.PARALLEL_MIN_MACS == 2 ** int(power)
    assert attention.SAVE_PROBS is (quoted(note, r"`SAVE_PROBS = (True|False)`") == "True")
    assert matmul.TILE == int(quoted(nb, r"and (\d+) × \d+ tiles so the block"))
    assert_rounds_to(-math.log10(np.finfo(np.float32).eps),
                     quoted(nb, r"Float32 keeps about (\d+) significant digits"), "7")
    B, H, T, hd = 16, 4, 128, 32
    assert_rounds_to(attention.HEADS_PER_TASK * T * T * 4 / 1e6,
                     quoted(note, r"Sixteen heads' scores \(16 × 128 × 128 floats, ([\d.]*\d) MB\)"), "16 heads' scores")
    assert_rounds_to(B * H * T * T * 4 / 1e6, quoted(note, r"The probabilities are ([\d.]*\d) MB per layer"), "probs")
    n_params = worked_model().num_parameters()
    assert_rounds_to(n_params / 1e6, quoted(note, r"\| AdamW update \(([\d.]*\d) M parameters\)"), "AdamW parameters")
    assert len(list(worked_model().parameters())) == int(quoted(note, r"so the GPT's (\d+) parameter updates"))
    # the linear layers' products per step: forward 2 N in out each, backward twice that (dx and dW)
    rows, C, V = B * T, WORKED["n_embd"], WORKED["vocab_size"]
    per_layer = 3 * C * C + C * C + 4 * C * C + 4 * C * C  # c_attn, attn.c_proj, c_fc, mlp.c_proj (in * out)
    flops = 3 * 2 * rows * (WORKED["n_layer"] * per_layer + C * V)  # + lm_head
    assert_rounds_to(flops / 1e9, quoted(note, r"\| (\d+) GFLOP of BLAS at"), "GFLOP per step")


def test_row_blocks_do_the_quoted_share_of_the_product_work():
    note = "docs/kernels.md"
    row = (r"do \(T/b \+ 1\)/\(2T/b\) of the full work: ([\d.]*\d)% for b = "
           r"(\d+) at T = (\d+),\s+([\d.]*\d)% for b = (\d+)")
    T = int(quoted(note, row, 3))
    for share, block in ((quoted(note, row, 1), int(quoted(note, row, 2))),
                         (quoted(note, row, 4), int(quoted(note, row, 5)))):
        saved = attention.ROW_BLOCK
        try:  # the blocks the kernel itself uses: rows r0..r1-1 multiply keys 0..r1-1
            attention.ROW_BLOCK = block
            work = sum((r1 - r0) * r1 for r0, r1 in attention._row_blocks(T, True)) / T**2
        finally:
            attention.ROW_BLOCK = saved
        assert work == pytest.approx((T / block + 1) / (2 * T / block))
        assert_rounds_to(100 * work, share, f"share of the work for b = {block}")
    assert_rounds_to(100 * (1 - (T / 64 + 1) / (2 * T / 64)), "25", "the skipped top-right quarter at T = 2b")


# ----------------------------------------------------------------------------------------------------
# 4. optim.md
# ----------------------------------------------------------------------------------------------------


def test_optim_figures():
    note = "docs/optim.md"
    mu = float(quoted(note, r"a (\d+)× larger\s+step for μ = ([\d.]*\d)", 2))
    assert_rounds_to(1 / (1 - mu), quoted(note, r"a (\d+)× larger\s+step for μ"), "momentum gain")
    beta1 = float(quoted(note, r"m₁ = [\d.]*\d·g₁ for β1 = ([\d.]*\d)"))
    assert_rounds_to(1 - beta1, quoted(note, r"m₁ = ([\d.]*\d)·g₁ for β1"), "m1")
    assert inspect.signature(AdamW).parameters["weight_decay"].default == float(
        quoted(note, r"The default is `weight_decay=([\d.]*\d)`"))
    p = tinyft.nn.Parameter(np.ones(10, np.float32))
    p.grad = np.ones(10, np.float32)
    per_parameter = {}
    for name, opt in (("SGD + momentum", SGD([p], lr=0.1, momentum=0.9)), ("Adam / AdamW", AdamW([p], lr=0.1))):
        opt.step()
        state = opt.state[0]
        arrays = [a for a in state.values() if isinstance(a, np.ndarray) and a.size == p.size]  # not "step"
        per_parameter[name] = len(arrays)
    for name, floats in per_parameter.items():  # weights and gradients (4N + 4N) plus the state
        assert 8 + 4 * floats == int(quoted(note, rf"\| {re.escape(name)} +\|[^|]+\| (\d+)N bytes"))
    gpt2 = formula_count(50257, 1024, 12, 768)
    assert_rounds_to(gpt2 / 1e6, quoted(note, r"For GPT-2 small \((\d+)M parameters\)"), "GPT-2 small")
    assert_rounds_to(gpt2 * 8 / 1e9, quoted(note, r"Adam's state\s+alone is about (\d+) GB"), "Adam state GB")


# ----------------------------------------------------------------------------------------------------
# 5. data.md, pretraining.md and notebook 05
# ----------------------------------------------------------------------------------------------------

NOTES_PYTHON = quoted("docs/data.md", r"measured on CPython (\d+\.\d+\.\d+), Linux")
# The corpora come from the frozen snapshot of that Python's text (data.load_snapshot), the same on every
# Python, so these checks run everywhere; the mark stays for what the note ties to its own machine.
on_notes_python = pytest.mark.skipif(False, reason="the corpora are the snapshot's on every Python")


@functools.lru_cache(maxsize=None)
def corpus_ids():
    """The broad corpus as character ids (the shared vocabulary) and as BPE-512 ids, each split by default."""
    broad, code = data.load_corpus("broad"), data.load_corpus("stdlib_code")
    char = CharTokenizer.build([broad, code])
    bpe = BPETokenizer.train(broad, vocab_size=512)
    return char, bpe, char.encode(broad), bpe.encode(broad)


@on_notes_python
def test_corpus_table_and_module_lists():
    note = "docs/data.md"
    for name in ("broad", "stdlib_code", "stdlib_code_shifted", "license"):
        row = rf"\| `\"{name}\"`[^|]*\|[^|]+\| ([\d,]+) \| ([\d,]+) \| (\d+) \|"
        try:
            text = data.load_corpus(name)
        except ValueError:  # the license text ships with some installs only
            assert name == "license"
            continue
        assert (len(text), len(text.encode("utf-8")), len(set(text))) == tuple(
            number(quoted(note, row, i))[0] for i in (1, 2, 3)), name
    assert len(data.CODE_MODULES) == int(quoted(note, r"source of (\d+) pure-Python stdlib modules"))
    assert len(data.SHIFTED_CODE_MODULES) == int(quoted(note, r"source of (\d+) other modules"))
    quote = quoted(note, r"the docstrings of the (\d+)\s+modules in `BROAD_DOC_MODULES`")
    assert len(data.BROAD_DOC_MODULES) == int(quote)
    topics = data.python_text()["topics"]  # the snapshot's copy of pydoc_data.topics
    assert len(topics) == int(quoted(note, r"the (\d+) topics of the\s+language reference"))
    assert_rounds_to(sum(len(t) for t in topics.values()) / 1e3,
                     quoted(note, r"sorted by key; about (\d+) KB"), "topics")
    assert len(data.HELD_OUT_MODULES) == int(quoted(note, r"from the (\d+) modules in `HELD_OUT_MODULES`"))
    pairs = data.held_out_docs()
    assert len(pairs) == int(quoted(note, r"`glob`, `shutil`, `graphlib`\): (\d+) pairs in"))
    example = quoted(note, r"e\.g\.\s+`\('([^']+)', '([^']+)'\)`", 0)
    assert tuple(re.findall(r"'([^']+)'", example)) in pairs


@on_notes_python
def test_domain_statistics():
    note = "docs/data.md"
    broad, code = data.load_corpus("broad"), data.load_corpus("stdlib_code")
    row = r'`"def "` occurs ([\d.]*\d) times per 1,000 characters in the code\s+against ([\d.]*\d) in the prose'
    assert_rounds_to(1000 * code.count("def ") / len(code), quoted(note, row, 1), "def per 1000 in code")
    assert_rounds_to(1000 * broad.count("def ") / len(broad), quoted(note, row, 2), "def per 1000 in prose")
    ratio = (code.count("    ") / len(code)) / (broad.count("    ") / len(broad))
    assert_rounds_to(ratio, quoted(note, r"runs of four spaces ([\d.]*\d) times as often"), "four spaces")
    p, q = np.zeros(0x110000), np.zeros(0x110000)
    np.add.at(p, [ord(c) for c in code], 1.0 / len(code))
    np.add.at(q, [ord(c) for c in broad], 1.0 / len(broad))
    assert_rounds_to(0.5 * np.abs(p - q).sum(),
                     quoted(note, r"distributions\s+are ([\d.]*\d) apart in total variation"), "TV")


@on_notes_python
def test_tokenizer_figures():
    note = "docs/data.md"
    char, bpe, char_ids, bpe_ids = corpus_ids()
    broad, code = data.load_corpus("broad"), data.load_corpus("stdlib_code")
    row = r"\((\d+) ids for broad \+ code: (\d+) from the prose, `(.)`\s+and `(.)` only in the code, plus `<unk>`\)"
    assert char.vocab_size == int(quoted(note, row, 1)) and len(set(broad)) == int(quoted(note, row, 2))
    assert sorted(set(code) - set(broad)) == sorted([quoted(note, row, 3), quoted(note, row, 4)])
    merges = [tuple(int(t) if t.isdigit() else ord(t) for t in m) for m in
              re.findall(r"`\((\w+), (\w+)\) → \d+`",
                         quoted(note, r"On `\"aaabdaaabac\"` the merges are (.+?) \(worked"))]
    learned = BPETokenizer.train("aaabdaaabac", vocab_size=256 + len(merges)).merges  # [((a, b), new id), ...]
    assert [tuple(pair) for pair, _ in learned] == merges
    new_ids = re.findall(r"→ (\d+)`", text_of(note).split("aaabdaaabac")[1][:200])
    assert [new for _, new in learned] == [int(i) for i in new_ids]
    table = {"vocabulary": (char.vocab_size, bpe.vocab_size), "tokens in broad": (len(char_ids), len(bpe_ids))}
    for label, values in table.items():
        row = rf"\| {label} \| ([\d,]+) \| ([\d,]+) \|"
        assert values == (number(quoted(note, row, 1))[0], number(quoted(note, row, 2))[0]), label
    row = r"\| characters per token \| ([\d.]*\d) \| ([\d.]*\d) \(([\d.]*\d) on the code\) \|"
    assert_rounds_to(len(broad) / len(char_ids), quoted(note, row, 1), "char chars/token")
    assert_rounds_to(len(broad) / len(bpe_ids), quoted(note, row, 2), "BPE chars/token")
    assert_rounds_to(len(code) / len(bpe.encode(code)), quoted(note, row, 3), "BPE chars/token on code")
    assert_rounds_to(len(broad) / len(bpe_ids),
                     quoted("docs/pretraining.md", r"averages about (\d) characters per token"), "~2")
    assert_rounds_to(len(broad) / len(bpe_ids), "2", "notebook 05: about twice as many characters per BPE token")
    assert "a BPE token carries about twice as\nmany characters" in text_of("notebooks/05_pretraining.ipynb")
    assert round(char.vocab_size, -1) == int(quoted("docs/pretraining.md", r"\(about (\d+) ids for the default"))
    assert "(512 ids instead of the character tokenizer's hundred or so)" in text_of("notebooks/05_pretraining.ipynb")
    assert PretrainConfig().bpe_vocab_size == 512


def test_split_sizes_follow_the_quoted_rule():
    note = "docs/data.md"
    chunk = int(number(quoted(note, r"cuts the ids into contiguous chunks of\s+([\d,]+) tokens"))[0])
    divisor = int(quoted(note, r"\(or `len\(ids\) // (\d+)` for short texts\)"))
    share = number(quoted(note, r"sends a seeded random (\d+)% of the chunks"))[0] / 100
    for n in (100_000, 30_000):  # a long text (4,096-token chunks) and a short one (n // 20 per chunk)
        size = chunk if n // divisor >= chunk else n // divisor
        _, val = data.train_val_split(np.arange(n) % 7)
        assert len(val) == round(share * (n // size)) * size, n
    assert "splits the ids 90 / 10" in text_of("notebooks/05_pretraining.ipynb") and share == 0.1


@on_notes_python
def test_validation_overlap_and_unigram_baseline():
    note, pre = "docs/data.md", "docs/pretraining.md"
    char, bpe, char_ids, bpe_ids = corpus_ids()
    train, val = data.train_val_split(char_ids)
    overlap = 100 * data.validation_overlap(train, val, window=32)
    row = (r"split: ([\d.]*\d)% for the broad corpus \(character ids\), ([\d.]*\d)% "
           r"with\s+BPE-512 ids, ([\d.]*\d)% for the code corpus")
    assert_rounds_to(overlap, quoted(note, row, 1), "overlap, char")
    assert_rounds_to(overlap,
                     quoted(pre, r"measures the fraction, about (\d+)% of 32-character"), "overlap, pretraining.md")
    assert_rounds_to(100 * data.validation_overlap(*data.train_val_split(bpe_ids), window=32),
                     quoted(note, row, 2), "BPE")
    code_ids = char.encode(data.load_corpus("stdlib_code"))
    assert_rounds_to(100 * data.validation_overlap(*data.train_val_split(code_ids), window=32),
                     quoted(note, row, 3), "code")
    unigram = data.unigram_loss(train, val, char.vocab_size)
    assert_rounds_to(unigram, quoted(note, r"with character ids it is ([\d.]*\d) nats/token"), "unigram, data.md")
    assert_rounds_to(unigram, quoted(pre, r"context: about ([\d.]*\d) nats per character"), "unigram, pretraining.md")
    assert_rounds_to(unigram, quoted(pre, r"unigram baseline of ([\d.]*\d), at"), "unigram, the demo")
    assert int(quoted(note, r"\$\\ln (\d+) = ([\d.]*\d)\$")) == char.vocab_size
    assert_rounds_to(math.log(char.vocab_size), quoted(note, r"\$\\ln (\d+) = ([\d.]*\d)\$", 2), "ln V")
    assert_rounds_to(math.log(char.vocab_size),
                     quoted(pre, r"scores \$\\ln V\$ \(([\d.]*\d) for (\d+) ids\)"), "ln 112")
    assert int(quoted(pre, r"scores \$\\ln V\$ \(([\d.]*\d) for (\d+) ids\)", 2)) == char.vocab_size


def test_pretraining_arithmetic():
    pre = "docs/pretraining.md"
    assert_rounds_to(math.exp(float(quoted(pre, r"A loss of\s+([\d.]*\d) nats is a perplexity of about"))),
                     quoted(pre, r"is a perplexity of about (\d+)"), "perplexity")
    row = r"reached ([\d.]*\d) nats per character on validation \(([\d.]*\d) bits per character"
    assert_rounds_to(float(quoted(pre, row, 1)) / math.log(2), quoted(pre, row, 2), "bits per character")
    assert PretrainConfig().steps == int(number(quoted(pre, r"with its defaults \(([\d,]+) steps\)"))[0])
    quote = quoted("notebooks/05_pretraining.ipynb", r"defaults train ([\d,]+)\s+steps")
    assert PretrainConfig().steps == int(number(quote)[0])
