"""Training-step throughput and memory: tinyft (NumPy twins, Numba kernels) vs a nanoGPT model in PyTorch eager.

Map of this script:
  machine()           CPU model, core count, Numba threads and threading layer, BLAS library and threads
  tinyft_stepper()    forward + backward + AdamW (nanoGPT's groups: decay 0.1 on 2-D params) on a tinyft GPT
  torch_stepper()     the same step on nanoGPT's own model.py (--nanogpt DIR) or on the built-in copy of it
                      (nanogpt_copy(): its modules, Dropout at p=0, tied lm_head, SDPA), configure_optimizers()
  run_rounds()        rounds alternating contenders, each round in a fresh `--worker` process that prints one
                      JSON object: step times, resident set before the first step, peak after (--config: size);
                      prime_numba_cache() first runs one untimed worker, so no timed round compiles
  kernel_table()      each kernel at the step's shapes: Numba time, NumPy-twin time, speed-up; torch SDPA
  startup()           import-to-end-of-first-step, warm Numba cache and cold (an empty NUMBA_CACHE_DIR)
  profile_step()      --profile: where a numba step's time goes, each Function's forward and backward timed
  profile_torch()     --profile-torch: torch.profiler's table of the torch step, and torch vs NumPy product speed
A round's figure is its median step time; tokens/s are reported as the median round, the best and the worst,
the ratio tinyft numba / torch from the medians and per round (the pair run side by side). Memory: VmRSS
before the first step, VmHWM (peak) after the last, their difference the step's increase (medians over
rounds). benchmarks/bench_scaling.py reuses these functions over model sizes. Usage:
  python benchmarks/bench_step.py [--steps 10] [--rounds 5] [--nanogpt DIR] [--gelu exact|tanh] [--no-torch] [--json]
  python benchmarks/bench_step.py --profile [--steps 20]
  python benchmarks/bench_step.py --profile-torch [--steps 10] [--nanogpt DIR]
"""

import argparse
import contextlib
import importlib.util
import io
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
# tinyft (and with it Numba) is imported inside the functions that use it: a torch worker's resident set then
# holds what a PyTorch user's process holds, no Numba. Workers start with the environment as it was before
# tinyft's import set OMP_WAIT_POLICY=PASSIVE (kernels/_backend.py), which PyTorch's OpenMP threads would obey.
USER_ENV = dict(os.environ)

CONFIG = dict(vocab_size=256, block_size=128, n_layer=4, n_head=4, n_embd=128)  # the reference step (batch 16)
GELU_KINDS = ("exact", "tanh")  # nanoGPT's nn.GELU() is the exact one
WEIGHT_DECAY, LEARNING_RATE, BETAS = 0.1, 3e-4, (0.9, 0.95)  # configure_optimizers(0.1, 3e-4, (0.9, 0.95), "cpu")
# Untimed steps first: load Numba's cache, allocate, fill caches, let torch settle. With 2, the first 10 timed
# steps of two 40-step torch workers ran 3-8% slower than their last 10, tinyft's 8% (13:05 UTC 2026-12-02).
WARMUP_STEPS = 5


# --- the machine ------------------------------------------------------------------------------------


def cpu_model():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def blas_info():
    try:
        import threadpoolctl
        for lib in threadpoolctl.threadpool_info():
            if lib.get("user_api") == "blas":
                return f"{lib.get('internal_api')} {lib.get('version')} ({lib.get('architecture')})", lib.get("num_threads")
    except ImportError:
        pass
    try:
        cfg = np.show_config(mode="dicts")["Build Dependencies"]["blas"]
        return f"{cfg.get('name')} {cfg.get('version')}", "unknown (install threadpoolctl to see)"
    except Exception:  # noqa: BLE001 - numpy < 1.26 has no mode="dicts"
        return "unknown", "unknown"


def machine():
    import numba

    import tinyft.kernels  # noqa: F401 - its process settings pick Numba's threading layer
    blas, blas_threads = blas_info()
    threads = numba.get_num_threads()  # starts Numba's thread pool, so threading_layer() can name its layer
    return {"cpu": cpu_model(), "cpu_count": os.cpu_count(), "numba": numba.__version__, "numpy": np.__version__,
            "numba_threads": threads, "numba_threading_layer": numba.threading_layer(),
            "blas": blas, "blas_threads": blas_threads, "python": platform.python_version()}


def machine_and_torch(no_torch):
    """machine(), plus torch's version and threads when it imports (and no_torch is off); (info, has_torch)."""
    info, torch = machine(), None
    if not no_torch:
        try:
            import torch
        except ImportError:
            pass
    if torch is not None:
        info["torch"], info["torch_threads"] = torch.__version__, torch.get_num_threads()
    return info, torch is not None


# --- memory of this process -----------------------------------------------------------------------------


def proc_status_mib(field):
    """A memory line of /proc/self/status ("VmRSS:   123456 kB"), MiB; None without /proc (not Linux)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return None


def rss_mib():
    """The resident set of this process now (VmRSS), MiB; None without /proc."""
    return proc_status_mib("VmRSS")


def peak_rss_mib():
    """The largest resident set of this process so far, MiB: VmHWM, the high-water mark of its own address space.
    Not getrusage's ru_maxrss where /proc has VmHWM: Linux carries the parent's peak into a child's ru_maxrss
    across fork and exec (measured: a child running only `import resource` reported the 324 MiB of a parent
    that had imported tinyft and torch, its own VmHWM 11 MiB), so it would say more about the parent."""
    peak = proc_status_mib("VmHWM")
    if peak is not None:
        return peak
    import resource
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if sys.platform == "darwin" else peak / 1024  # bytes on macOS, KiB elsewhere


# --- the two models and their optimizers -------------------------------------------------------------


def make_batch(batch_size, config=CONFIG, seed=0):
    rng = np.random.default_rng(seed)
    T, V = config["block_size"], config["vocab_size"]
    return rng.integers(0, V, (batch_size, T)), rng.integers(0, V, (batch_size, T))


def nanogpt_param_groups(params, weight_decay=WEIGHT_DECAY):
    """nanoGPT's configure_optimizers groups: decay on every parameter with ndim >= 2 (Linear weights and the
    embeddings, the tied lm_head among them), none on the rest (biases, LayerNorm weights). tinyft and torch alike."""
    params = list(params)
    return [{"params": [p for p in params if p.ndim >= 2], "weight_decay": weight_decay},
            {"params": [p for p in params if p.ndim < 2], "weight_decay": 0.0}]


def tinyft_model_and_optimizer(config=CONFIG, gelu_kind="exact"):
    import tinyft
    from tinyft.nn import GPT, GPTConfig
    from tinyft.optim import AdamW
    tinyft.manual_seed(0)
    model = GPT(GPTConfig(**config, gelu=gelu_kind))
    return model, AdamW(nanogpt_param_groups(model.parameters()), lr=LEARNING_RATE, betas=BETAS)


def tinyft_stepper(batch_size, config=CONFIG, gelu_kind="exact", nanogpt=None):
    """One training step of tinyft's GPT as a function; step.info says what it trains (nanogpt is unused)."""
    model, opt = tinyft_model_and_optimizer(config, gelu_kind)
    idx, targets = make_batch(batch_size, config)

    def step():
        _, loss = model(idx, targets)
        opt.zero_grad()
        loss.backward()
        opt.step()
        return float(loss.data)

    step.info = {"model": f"tinyft GPT, gelu {gelu_kind!r}", "params": model.num_parameters()}
    return step


def load_nanogpt(nanogpt_dir):
    """The module DIR/model.py of the user's nanoGPT checkout (imported under the name nanogpt_model)."""
    path = os.path.join(os.path.abspath(nanogpt_dir), "model.py")
    spec = importlib.util.spec_from_file_location("nanogpt_model", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its @dataclass GPTConfig looks its module up there
    spec.loader.exec_module(module)
    return module


def nanogpt_copy(config=CONFIG):
    """A torch GPT built like nanoGPT's model.py, module for module, for when no --nanogpt checkout is given:
    its LayerNorm class, c_attn/c_proj with SDPA causal attention, Dropout modules at p=0, an MLP with
    nn.GELU(), pre-LayerNorm Blocks, lm_head tied to wte, GPT-2's init (c_proj weights scaled by 1/sqrt(2 L))."""
    import math

    import torch
    import torch.nn as nn
    import torch.nn.functional as F
    C, H, L, V, T = (config[k] for k in ("n_embd", "n_head", "n_layer", "vocab_size", "block_size"))
    dropout = 0.0

    class LayerNorm(nn.Module):  # nanoGPT's: F.layer_norm with a bias that may be None (here always there)
        def __init__(self, ndim):
            super().__init__()
            self.weight, self.bias = nn.Parameter(torch.ones(ndim)), nn.Parameter(torch.zeros(ndim))

        def forward(self, x):
            return F.layer_norm(x, self.weight.shape, self.weight, self.bias, 1e-5)

    class CausalSelfAttention(nn.Module):
        def __init__(self):
            super().__init__()
            self.c_attn, self.c_proj = nn.Linear(C, 3 * C), nn.Linear(C, C)
            self.attn_dropout, self.resid_dropout = nn.Dropout(dropout), nn.Dropout(dropout)

        def forward(self, x):
            B, T_, _ = x.shape
            q, k, v = self.c_attn(x).split(C, dim=2)  # (B, T, C) each
            q, k, v = (t.view(B, T_, H, C // H).transpose(1, 2) for t in (q, k, v))  # (B, H, T, hd)
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=None, dropout_p=dropout if self.training else 0,
                                               is_causal=True)  # (B, H, T, hd)
            y = y.transpose(1, 2).contiguous().view(B, T_, C)
            return self.resid_dropout(self.c_proj(y))

    class MLP(nn.Module):
        def __init__(self):
            super().__init__()
            self.c_fc, self.gelu = nn.Linear(C, 4 * C), nn.GELU()
            self.c_proj, self.dropout = nn.Linear(4 * C, C), nn.Dropout(dropout)

        def forward(self, x):
            return self.dropout(self.c_proj(self.gelu(self.c_fc(x))))  # (B, T, 4C) inside, (B, T, C) out

    class Block(nn.Module):
        def __init__(self):
            super().__init__()
            self.ln_1, self.attn, self.ln_2, self.mlp = LayerNorm(C), CausalSelfAttention(), LayerNorm(C), MLP()

        def forward(self, x):
            x = x + self.attn(self.ln_1(x))
            return x + self.mlp(self.ln_2(x))

    class GPT(nn.Module):
        def __init__(self):
            super().__init__()
            self.transformer = nn.ModuleDict(dict(
                wte=nn.Embedding(V, C), wpe=nn.Embedding(T, C), drop=nn.Dropout(dropout),
                h=nn.ModuleList(Block() for _ in range(L)), ln_f=LayerNorm(C)))
            self.lm_head = nn.Linear(C, V, bias=False)
            self.transformer.wte.weight = self.lm_head.weight  # tied, as in nanoGPT
            for module in self.modules():
                if isinstance(module, (nn.Linear, nn.Embedding)):
                    nn.init.normal_(module.weight, mean=0.0, std=0.02)
                if isinstance(module, nn.Linear) and module.bias is not None:
                    nn.init.zeros_(module.bias)
            for name, p in self.named_parameters():
                if name.endswith("c_proj.weight"):
                    nn.init.normal_(p, mean=0.0, std=0.02 / math.sqrt(2 * L))

        def forward(self, idx, targets):
            pos = torch.arange(0, idx.shape[1], dtype=torch.long)  # (T,)
            x = self.transformer.drop(self.transformer.wte(idx) + self.transformer.wpe(pos))  # (B, T, C)
            for block in self.transformer.h:
                x = block(x)
            logits = self.lm_head(self.transformer.ln_f(x))  # (B, T, V)
            loss = F.cross_entropy(logits.view(-1, logits.size(-1)), targets.view(-1), ignore_index=-1)
            return logits, loss

    return GPT()


def torch_stepper(batch_size, config=CONFIG, gelu_kind="exact", nanogpt=None):
    """One training step of nanoGPT's GPT (DIR/model.py when nanogpt=DIR, else nanogpt_copy()) with its
    configure_optimizers groups; gelu_kind "tanh" swaps each block's mlp.gelu for nn.GELU(approximate="tanh")."""
    import torch
    torch.manual_seed(0)
    if nanogpt:
        module = load_nanogpt(nanogpt)
        with contextlib.redirect_stdout(io.StringIO()):  # it prints its parameter count and its two groups
            model = module.GPT(module.GPTConfig(**config, dropout=0.0, bias=True))
            opt = model.configure_optimizers(weight_decay=WEIGHT_DECAY, learning_rate=LEARNING_RATE, betas=BETAS,
                                             device_type="cpu")
        label = f"nanoGPT model.py ({os.path.abspath(nanogpt)})"
    else:
        model = nanogpt_copy(config)
        opt = torch.optim.AdamW(nanogpt_param_groups(model.parameters()), lr=LEARNING_RATE, betas=BETAS)
        label = "torch (built-in nanoGPT copy)"
    if gelu_kind == "tanh":
        for block in model.transformer.h:
            if not isinstance(getattr(block.mlp, "gelu", None), torch.nn.GELU):
                raise ValueError("--gelu tanh: this model's blocks have no mlp.gelu = nn.GELU() to swap")
            block.mlp.gelu = torch.nn.GELU(approximate="tanh")
        label += ", mlp.gelu swapped for nn.GELU(approximate='tanh')"
    model.train()
    idx, targets = (torch.from_numpy(a) for a in make_batch(batch_size, config))

    def step():
        _, loss = model(idx, targets)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        return float(loss.detach())

    step.info = {"model": label, "params": sum(p.numel() for p in model.parameters())}
    return step


CONTENDERS = {"tinyft numpy": (tinyft_stepper, "numpy"), "tinyft numba": (tinyft_stepper, "numba"),
              "torch eager": (torch_stepper, None)}


# --- timing: rounds of fresh worker processes -------------------------------------------------------------


def timed_steps(step, steps, warmup=WARMUP_STEPS):
    for _ in range(warmup):
        step()
    times = []
    for _ in range(steps):
        t0 = time.perf_counter()
        step()
        times.append(time.perf_counter() - t0)
    return times


def backend_of(name):
    from tinyft import kernels
    backend = CONTENDERS[name][1]
    return kernels.use(backend) if backend else contextlib.nullcontext()


def worker(name, size, steps, gelu_kind="exact", nanogpt=None):
    """One contender in this (fresh) process: build, memory before the first step, time, peak memory after.
    size: the GPTConfig fields plus batch_size. Returns the dict the worker prints as one JSON line."""
    config = {k: v for k, v in size.items() if k != "batch_size"}
    with backend_of(name):
        step = CONTENDERS[name][0](size["batch_size"], config, gelu_kind, nanogpt)
        before, peak_before = rss_mib(), peak_rss_mib()  # model, optimizer and batch built; no step run yet
        times = timed_steps(step, steps)
        peak = peak_rss_mib()
    return {"name": name, **step.info, "times": times, "rss_before_mib": before, "peak_before_step_mib": peak_before,
            "peak_mib": peak, "step_increase_mib": None if before is None else peak - before}


def run_rounds(names, size, steps, rounds, gelu_kind="exact", nanogpt=None):
    """`rounds` rounds, in each every contender once in a fresh `bench_step.py --worker NAME --config SIZE`
    (in the order of names: a noisy neighbour hurts them alike). {name: [worker dict per round]}."""
    results = {name: [] for name in names}
    for _ in range(rounds):
        for name in names:
            cmd = [sys.executable, os.path.abspath(__file__), "--worker", name, "--config", json.dumps(size),
                   "--steps", str(steps), "--gelu", gelu_kind] + (["--nanogpt", nanogpt] if nanogpt else [])
            done = subprocess.run(cmd, capture_output=True, text=True, env=USER_ENV)
            if done.returncode != 0:
                raise RuntimeError(f"the {name!r} worker failed ({' '.join(cmd)}):\n{done.stderr}")
            results[name].append(json.loads(done.stdout.strip().splitlines()[-1]))
    return results


def prime_numba_cache(size, gelu_kind="exact"):
    """One untimed tinyft numba worker of this size (its warm-up steps only): Numba compiles on first use and
    writes its cache, and no timed round should count compiling in its time or peak memory. The same size,
    because which kernels run (serial or parallel paths) can depend on the shapes."""
    run_rounds(["tinyft numba"], size, 0, 1, gelu_kind)


def run_rounds_same_process(names, size, steps, rounds, gelu_kind="exact", nanogpt=None):
    """As run_rounds, every contender in this one process (--same-process); no memory figures."""
    config = {k: v for k, v in size.items() if k != "batch_size"}
    steppers, results = {}, {name: [] for name in names}
    for name in names:
        with backend_of(name):
            steppers[name] = CONTENDERS[name][0](size["batch_size"], config, gelu_kind, nanogpt)
            timed_steps(steppers[name], 0)
    for _ in range(rounds):
        for name in names:
            with backend_of(name):
                times = timed_steps(steppers[name], steps, warmup=0)
            results[name].append({"name": name, **steppers[name].info, "times": times, "rss_before_mib": None,
                                  "peak_before_step_mib": None, "peak_mib": None, "step_increase_mib": None})
    return results


def summarize(results, tokens):
    """Per contender: each round's figure (its median step time), the median, best and worst round in ms and
    tokens/s, and the memory figures' medians over rounds (None when not measured)."""
    summary = {}
    for name, rounds in results.items():
        round_s = [statistics.median(r["times"]) for r in rounds]
        med, best, worst = statistics.median(round_s), min(round_s), max(round_s)

        def mem(key):
            values = [r[key] for r in rounds if r.get(key) is not None]
            return statistics.median(values) if values else None

        summary[name] = {"model": rounds[0]["model"], "params": rounds[0]["params"],
                         "round_ms": [s * 1e3 for s in round_s], "median_ms": med * 1e3, "best_round_ms": best * 1e3,
                         "worst_round_ms": worst * 1e3, "best_ms": min(min(r["times"]) for r in rounds) * 1e3,
                         "tokens_per_s": tokens / med, "tokens_per_s_best_round": tokens / best,
                         "tokens_per_s_worst_round": tokens / worst, "rss_before_mib": mem("rss_before_mib"),
                         "peak_before_step_mib": mem("peak_before_step_mib"), "peak_mib": mem("peak_mib"),
                         "step_increase_mib": mem("step_increase_mib")}
    return summary


def ratio_summary(summary, ours="tinyft numba", theirs="torch eager"):
    """ours / theirs in tokens/s: from the medians, and round by round (the pair that ran side by side)."""
    per_round = [t / o for o, t in zip(summary[ours]["round_ms"], summary[theirs]["round_ms"])]
    return {"ratio": summary[ours]["tokens_per_s"] / summary[theirs]["tokens_per_s"], "round_ratios": per_round,
            "best_round_ratio": max(per_round), "worst_round_ratio": min(per_round)}


def fmt_mib(x):
    return "n/a" if x is None else f"{x:.0f}"


# --- kernels at the step's shapes ---------------------------------------------------------------------


def best_and_median(fn, repeats):
    fn()
    ts = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t0)
    return min(ts), statistics.median(ts)


ATTENTION_ROW = "attention fwd+bwd"  # kernel_table's row that torch's SDPA is set beside


def kernel_cases(batch_size):
    from tinyft.kernels import adamw, attention, cross_entropy, embedding, gelu, layernorm
    rng = np.random.default_rng(0)
    f32 = np.float32
    B, T, C, V, H = batch_size, CONFIG["block_size"], CONFIG["n_embd"], CONFIG["vocab_size"], CONFIG["n_head"]
    N = B * T
    x, g = rng.standard_normal((N, C)).astype(f32), rng.standard_normal((N, C)).astype(f32)
    w, b = rng.standard_normal(C).astype(f32), rng.standard_normal(C).astype(f32)
    eps = f32(1e-5)
    _, mean, rstd = layernorm.layernorm_forward_reference(x, w, b, eps)
    h = rng.standard_normal(N * 4 * C).astype(f32)
    logits, targets = rng.standard_normal((N, V)).astype(f32), rng.integers(0, V, N)
    _, lse = cross_entropy.cross_entropy_forward_reference(logits, targets, -1)
    g_rows = np.full(N, 1.0 / N, f32)
    q, k, v, dout = (rng.standard_normal((B, H, T, C // H)).astype(f32) for _ in range(4))
    ids = rng.integers(0, V, N)
    n_params = 12 * CONFIG["n_layer"] * C * C + (V + T) * C  # about the GPT's parameter count
    p, pg, m, vv = (rng.standard_normal(n_params).astype(f32) for _ in range(4))
    vv = np.abs(vv)
    save = attention.SAVE_PROBS

    def attn(fw, bw, save_probs):
        def run():
            out, l_, probs = fw(q, k, v, True, save_probs)
            bw(dout, q, k, v, out, l_, probs, True)
        return run

    A = attention
    return {  # name: (numba callable, numpy-twin callable)
        f"layernorm fwd ({N}x{C})": (lambda: layernorm.layernorm_forward_numba(x, w, b, eps),
                                     lambda: layernorm.layernorm_forward_reference(x, w, b, eps)),
        "layernorm bwd": (lambda: layernorm.layernorm_backward_numba(g, x, w, mean, rstd),
                          lambda: layernorm.layernorm_backward_reference(g, x, w, mean, rstd)),
        f"gelu tanh fwd ({N}x{4 * C})": (lambda: gelu.gelu_forward_numba(h), lambda: gelu.gelu_forward_reference(h)),
        "gelu tanh bwd": (lambda: gelu.gelu_backward_numba(h, h), lambda: gelu.gelu_backward_reference(h, h)),
        "gelu exact fwd": (lambda: gelu.gelu_exact_forward_numba(h), lambda: gelu.gelu_exact_forward_reference(h)),
        "gelu exact bwd": (lambda: gelu.gelu_exact_backward_numba(h, h),
                           lambda: gelu.gelu_exact_backward_reference(h, h)),
        f"cross-entropy fwd ({N}x{V})": (lambda: cross_entropy.cross_entropy_forward_numba(logits, targets, -1),
                                         lambda: cross_entropy.cross_entropy_forward_reference(logits, targets, -1)),
        "cross-entropy bwd": (lambda: cross_entropy.cross_entropy_backward_numba(g_rows, logits, targets, -1, lse),
                              lambda: cross_entropy.cross_entropy_backward_reference(g_rows, logits, targets, -1, lse)),
        f"{ATTENTION_ROW} ({B},{H},{T},{C // H}) save_probs={save}": (
            attn(A.attention_forward_numba, A.attention_backward_numba, save),
            attn(A.attention_forward_reference, A.attention_backward_reference, True)),
        f"attention fwd+bwd save_probs={not save}": (
            attn(A.attention_forward_numba, A.attention_backward_numba, not save),
            attn(A.attention_forward_reference, A.attention_backward_reference, True)),
        f"embedding bwd ({N} ids, {V}x{C})": (lambda: embedding.embedding_backward_numba(ids, g, V),
                                              lambda: embedding.embedding_backward_reference(ids, g, V)),
        f"adamw update ({n_params} params)": (
            lambda: adamw.adam_update_numba(p, pg, m, vv, 3e-4, 0.9, 0.95, 1e-8, 0.1, 5, True),
            lambda: adamw.adam_update_reference(p, pg, m, vv, 3e-4, 0.9, 0.95, 1e-8, 0.1, 5, True)),
    }, (q, k, v, dout)


def kernel_table(batch_size, repeats):
    cases, attn_inputs = kernel_cases(batch_size)
    rows = []
    for name, (fast, twin) in cases.items():
        nb, nb_med = best_and_median(fast, repeats)
        tw, tw_med = best_and_median(twin, repeats)
        rows.append({"kernel": name, "numba_ms": nb * 1e3, "numba_median_ms": nb_med * 1e3, "numpy_ms": tw * 1e3,
                     "numpy_median_ms": tw_med * 1e3, "speedup": tw / nb, "speedup_median": tw_med / nb_med})
    return rows, attn_inputs


def torch_sdpa_ms(q, k, v, dout, repeats):
    import torch
    import torch.nn.functional as TF
    tq, tk, tv = (torch.from_numpy(a.copy()).requires_grad_() for a in (q, k, v))
    tg = torch.from_numpy(dout)

    def run():
        out = TF.scaled_dot_product_attention(tq, tk, tv, is_causal=True)
        out.backward(tg)

    best, med = best_and_median(run, repeats)
    return best * 1e3, med * 1e3


# --- start-up time --------------------------------------------------------------------------------------

STARTUP_SCRIPT = """
import time; t0 = time.perf_counter()
import sys; sys.path.insert(0, {root!r})
import numpy as np
import tinyft
from tinyft.nn import GPT, GPTConfig
from tinyft.optim import AdamW
model = GPT(GPTConfig(**{config!r}))
opt = AdamW(model.parameters(), lr=3e-4)
rng = np.random.default_rng(0)
idx, targets = rng.integers(0, {vocab}, ({batch}, {block})), rng.integers(0, {vocab}, ({batch}, {block}))
_, loss = model(idx, targets); opt.zero_grad(); loss.backward(); opt.step()
print(time.perf_counter() - t0)
"""


def startup(batch_size, gelu_kind="exact"):
    root = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
    code = STARTUP_SCRIPT.format(root=root, config=dict(CONFIG, gelu=gelu_kind), batch=batch_size,
                                 vocab=CONFIG["vocab_size"], block=CONFIG["block_size"])

    def run(env):
        done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                              env={**os.environ, "TINYFT_KERNELS": "numba", **env}, timeout=900)
        if done.returncode != 0:
            raise RuntimeError(done.stderr)
        return float(done.stdout.strip().splitlines()[-1])

    with tempfile.TemporaryDirectory() as empty:
        cold = run({"NUMBA_CACHE_DIR": empty})
        warm = min(run({"NUMBA_CACHE_DIR": empty}) for _ in range(2))
    warm_default = run({})  # the cache beside the source files, as a user gets it
    return {"cold_s": cold, "warm_s": warm, "warm_default_cache_s": warm_default}


# --- where the time goes -------------------------------------------------------------------------------


def profile_step(steps, batch_size, gelu_kind="exact"):
    """Time every Function's forward and backward (and the three phases) inside numba training steps."""
    import collections

    from tinyft import kernels
    from tinyft.autograd import Function
    totals = collections.defaultdict(float)

    def timed(fn, label):
        def run(*args, **kwargs):
            t0 = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                totals[label] += time.perf_counter() - t0
        return staticmethod(run)

    classes, todo = set(), [Function]
    while todo:  # every Function subclass, however deep
        for sub in todo.pop().__subclasses__():
            classes.add(sub)
            todo.append(sub)
    for cls in classes:
        for phase in ("forward", "backward"):
            if isinstance(cls.__dict__.get(phase), staticmethod):
                setattr(cls, phase, timed(cls.__dict__[phase].__func__, f"{cls.__name__}.{phase}"))
    with kernels.use("numba"):
        model, opt = tinyft_model_and_optimizer(CONFIG, gelu_kind)
        idx, targets = make_batch(batch_size)
        phases = collections.defaultdict(float)
        for i in range(steps + WARMUP_STEPS):
            if i == WARMUP_STEPS:  # the warm-up steps are not counted
                totals.clear()
                phases.clear()
            t0 = time.perf_counter()
            _, loss = model(idx, targets)
            t1 = time.perf_counter()
            opt.zero_grad()
            loss.backward()
            t2 = time.perf_counter()
            opt.step()
            t3 = time.perf_counter()
            phases["forward"] += t1 - t0
            phases["backward"] += t2 - t1
            phases["optimizer step"] += t3 - t2
    print(f"numba step (gelu {gelu_kind}), mean over {steps} steps: "
          + ", ".join(f"{k} {v / steps * 1e3:.1f} ms" for k, v in phases.items()))
    print(f"{'Function.phase':<34}{'ms per step':>12}")
    for label, total in sorted(totals.items(), key=lambda kv: -kv[1]):
        if total / steps >= 5e-5:
            print(f"{label:<34}{total / steps * 1e3:>12.2f}")


# --- main -----------------------------------------------------------------------------------------------


def add_common_arguments(parser, rounds):
    """The flags bench_step.py and bench_scaling.py share (the timing and the torch side)."""
    parser.add_argument("--steps", type=int, default=5, help="timed steps per contender per round (default 5)")
    parser.add_argument("--rounds", type=int, default=rounds,
                        help=f"alternating rounds, a fresh process per contender each (default {rounds})")
    parser.add_argument("--gelu", choices=GELU_KINDS, default="exact",
                        help="the MLP's GELU on both sides (default exact, nanoGPT's nn.GELU())")
    parser.add_argument("--nanogpt", metavar="DIR",
                        help="a nanoGPT checkout: time its own model.py (default: the built-in copy of it)")
    parser.add_argument("--no-torch", action="store_true", help="skip PyTorch even if it imports")
    parser.add_argument("--json", action="store_true", help="print a JSON summary as the last line")


def check_common_arguments(parser, args):
    for flag in ("steps", "rounds"):
        if getattr(args, flag) < 1:
            parser.error(f"--{flag} must be at least 1, got {getattr(args, flag)}")
    if args.nanogpt is not None and not os.path.isfile(os.path.join(args.nanogpt, "model.py")):
        parser.error(f"--nanogpt {args.nanogpt!r}: no model.py there; pass a nanoGPT checkout")


def profile_torch(steps, batch_size, gelu_kind="exact", nanogpt=None):
    """--profile-torch: torch.profiler's table of the torch contender's step (the same model and optimizer as
    the timed rounds), then torch.matmul against np.matmul on the reference step's widest product."""
    import torch
    from torch.profiler import ProfilerActivity, profile
    step = torch_stepper(batch_size, CONFIG, gelu_kind, nanogpt)
    for _ in range(3):  # warm-up
        step()
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(steps):
            step()
    print(f"torch eager step, {steps} steps under torch.profiler (its times are totals over the steps):")
    print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=16))
    rng = np.random.default_rng(0)
    x, w = rng.standard_normal((2048, 128), dtype=np.float32), rng.standard_normal((512, 128), dtype=np.float32)
    tx, tw = torch.from_numpy(x), torch.from_numpy(w)
    flop = 2 * 2048 * 128 * 512
    for name, run in (("torch.matmul", lambda: tx @ tw.T), ("np.matmul (OpenBLAS)", lambda: x @ w.T)) * 2:
        best, _ = best_and_median(run, 50)
        print(f"{name:<22} (2048,128)@(128,512) best of 50: {best * 1e3:.3f} ms, {flop / best / 1e9:.0f} GFLOP/s")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    add_common_arguments(parser, rounds=5)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=20, help="repeats per kernel timing")
    parser.add_argument("--no-startup", action="store_true", help="skip the import-to-first-step subprocesses")
    parser.add_argument("--same-process", action="store_true",
                        help="time every contender in this process (default: a fresh process per round)")
    parser.add_argument("--profile", action="store_true", help="only show where a numba step's time goes")
    parser.add_argument("--profile-torch", action="store_true",
                        help="only show where the torch step's time goes (torch.profiler), and torch's product speed")
    parser.add_argument("--worker", choices=CONTENDERS, help=argparse.SUPPRESS)  # internal: one contender, JSON
    parser.add_argument("--config", help=argparse.SUPPRESS)  # internal: the worker's size (GPTConfig + batch_size)
    args = parser.parse_args(argv)
    if args.worker:
        size = json.loads(args.config) if args.config else dict(CONFIG, batch_size=args.batch_size)
        print(json.dumps(worker(args.worker, size, args.steps, args.gelu, args.nanogpt)))
        return
    check_common_arguments(parser, args)
    if args.profile:
        profile_step(args.steps, args.batch_size, args.gelu)
        return
    if args.profile_torch:
        profile_torch(args.steps, args.batch_size, args.gelu, args.nanogpt)
        return

    info, has_torch = machine_and_torch(args.no_torch)
    print("machine: " + ", ".join(f"{k}={v}" for k, v in info.items()))
    size = dict(CONFIG, batch_size=args.batch_size)
    names = [name for name in CONTENDERS if has_torch or name != "torch eager"]
    if not args.same_process:  # (one process warms up every contender before its first timed round)
        prime_numba_cache(size, args.gelu)
    run = run_rounds_same_process if args.same_process else run_rounds
    results = run(names, size, args.steps, args.rounds, args.gelu, args.nanogpt)
    tokens = args.batch_size * CONFIG["block_size"]
    steps = summarize(results, tokens)
    print(f"config: {CONFIG}, batch {args.batch_size} ({tokens} tokens), float32, gelu {args.gelu}; "
          f"{args.rounds} rounds x {args.steps} steps (after {WARMUP_STEPS} warm-up), "
          f"{'all in one process' if args.same_process else 'a fresh process per contender and round'}")
    for name in names:
        print(f"  {name}: {steps[name]['model']}, {steps[name]['params']:,} parameters")
    print("  AdamW lr 3e-4, betas (0.9, 0.95), weight decay 0.1 on the 2-D parameters, 0 on the rest")
    summary = {"machine": info, "config": CONFIG, "batch_size": args.batch_size, "gelu": args.gelu,
               "rounds": args.rounds, "steps_per_round": args.steps, "same_process": args.same_process,
               "steps": steps}

    print(f"\n{'training step':<14}{'median ms':>10}{'tokens/s: median':>18}{'best round':>12}{'worst round':>13}"
          "   each round's median ms")
    for name, s in steps.items():
        print(f"{name:<14}{s['median_ms']:>10.1f}{s['tokens_per_s']:>18.0f}{s['tokens_per_s_best_round']:>12.0f}"
              f"{s['tokens_per_s_worst_round']:>13.0f}   " + " ".join(f"{ms:.1f}" for ms in s["round_ms"]))
    if "torch eager" in steps:
        r = ratio_summary(steps)
        summary.update(numba_over_torch=r["ratio"], round_ratios=r["round_ratios"],
                       best_round_ratio=r["best_round_ratio"], worst_round_ratio=r["worst_round_ratio"])
        print(f"tinyft numba / torch eager (median tokens/s): {r['ratio']:.2f}x; round by round (side by side): "
              + " ".join(f"{x:.2f}" for x in r["round_ratios"])
              + f"; best {r['best_round_ratio']:.2f}x, worst {r['worst_round_ratio']:.2f}x")
    summary["numba_over_numpy"] = steps["tinyft numba"]["tokens_per_s"] / steps["tinyft numpy"]["tokens_per_s"]
    print(f"tinyft numba / tinyft numpy: {summary['numba_over_numpy']:.2f}x")

    if not args.same_process:
        print(f"\n{'memory, MiB':<14}{'before 1st step':>16}{'peak':>7}{'step peak - before':>20}"
              "   (medians over rounds: VmRSS, VmHWM)")
        for name, s in steps.items():
            print(f"{name:<14}{fmt_mib(s['rss_before_mib']):>16}{fmt_mib(s['peak_mib']):>7}"
                  f"{fmt_mib(s['step_increase_mib']):>20}")

    rows, (q, k, v, dout) = kernel_table(args.batch_size, args.repeats)
    summary["kernels"] = rows
    print(f"\n{'kernel (float32)':<48}{'numba ms':>9}{'numpy ms':>9}{'speed-up':>9}{'(median)':>9}")
    for r in rows:
        print(f"{r['kernel']:<48}{r['numba_ms']:>9.3f}{r['numpy_ms']:>9.3f}{r['speedup']:>8.1f}x"
              f"{r['speedup_median']:>8.1f}x")
    if has_torch:
        best, med = torch_sdpa_ms(q, k, v, dout, args.repeats)
        ours = next(r for r in rows if r["kernel"].startswith(ATTENTION_ROW))
        summary["sdpa"] = {"torch_ms": best, "torch_median_ms": med, "ours_ms": ours["numba_ms"],
                           "ours_median_ms": ours["numba_median_ms"]}
        print(f"torch SDPA fwd+bwd (is_causal) {best:.3f} ms (median {med:.3f}); ours {ours['numba_ms']:.3f} ms "
              f"(median {ours['numba_median_ms']:.3f}): {best / ours['numba_ms']:.2f}x")

    if not args.no_startup:
        s = startup(args.batch_size, args.gelu)
        summary["startup"] = s
        print(f"\nimport to end of first step (gelu {args.gelu}): warm cache {s['warm_s']:.2f} s (default cache "
              f"folder {s['warm_default_cache_s']:.2f} s), cold cache {s['cold_s']:.2f} s")
    if args.json:
        print(json.dumps(summary))


if __name__ == "__main__":
    main()
