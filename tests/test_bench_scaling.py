"""benchmarks/bench_scaling.py's cheap pieces, without PyTorch: its FLOP count and its table. No speed asserted.

Map of this file:
  the product list   step_products() against formulas written here: forward 2 N (12 L C^2 + C V) for the Linear
                     layers plus 2 * 2 B H T^2 hd per layer for attention, backward twice that; operand shapes;
                     blas_limit() = those flops / the rate
  the sizes          2048 tokens each, base/large equal to the course presets, ~0.2M to ~10M parameters
  the script         a --no-torch smoke run (one tinyft worker per size) prints a row per size; bad --sizes
"""

import importlib.util
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from tinyft.nn import GPT, GPTConfig
from tinyft.pretrain import COURSE_PRESETS

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPT = os.path.join(ROOT, "benchmarks", "bench_scaling.py")


def load_script():
    spec = importlib.util.spec_from_file_location("bench_scaling", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


bench_scaling = load_script()

ODD = dict(n_layer=3, n_head=2, n_embd=48, block_size=20, batch_size=3)  # nothing a power of two


def gpt_parameters(L, C, T, V):
    """A GPT's parameter count by hand: embeddings, per block 2 LayerNorms and 4 Linears with biases, ln_f."""
    per_block = 2 * 2 * C + (C * 3 * C + 3 * C) + (C * C + C) + (C * 4 * C + 4 * C) + (4 * C * C + C)
    return V * C + T * C + L * per_block + 2 * C  # lm_head is wte (tied): no extra count


@pytest.mark.parametrize("size_name", ["xs", "ref", "base", "large", "xl", "odd"])
@pytest.mark.parametrize("vocab", [256, 37])
def test_step_flops_match_the_written_out_formula(size_name, vocab):
    size = ODD if size_name == "odd" else bench_scaling.SIZES[size_name]
    L, H, C, T, B = (size[k] for k in ("n_layer", "n_head", "n_embd", "block_size", "batch_size"))
    N, hd = B * T, C // H
    linear_forward = 2 * N * (12 * L * C * C + C * vocab)  # x W^T of every Linear, the tied lm_head too
    attention_forward = L * 2 * 2 * B * H * T * T * hd  # q k^T and p v, full (T, T), every layer
    products = bench_scaling.step_products(size, vocab)
    forward = [p for p in products if " y = " in p["name"] or " s = " in p["name"]]
    total = sum(bench_scaling.flops(p) for p in products)
    assert sum(bench_scaling.flops(p) for p in forward) == linear_forward + attention_forward
    assert total == 3 * (linear_forward + attention_forward)  # backward: two products per forward one
    assert len(products) == 3 * 5 + 6  # 5 Linear shapes x (y, dx, dW), 6 attention products
    assert sum(p["count"] for p in products) == 3 * (4 * L + 1) + 6 * L  # products per step


def test_each_products_operands_have_its_shapes_and_layout():
    rng = np.random.default_rng(0)
    for p in bench_scaling.step_products(ODD, 37):
        a, b = bench_scaling.operands(p, rng)
        lead = (p["batch"],) if p["batch"] > 1 else ()
        assert a.shape == (*lead, p["m"], p["k"]) and b.shape == (*lead, p["k"], p["n"]), p["name"]
        assert a.dtype == b.dtype == np.float32
        assert a.flags.c_contiguous != p["trans_a"] and b.flags.c_contiguous != p["trans_b"], p["name"]
        assert np.matmul(a, b).size * p["k"] * 2 * p["count"] == bench_scaling.flops(p)
        left, right = p["name"].split(" = ")[1].split()  # "g^T x": the operand written ^T is a transposed view
        assert (p["trans_a"], p["trans_b"]) == (left.endswith("^T"), right.endswith("^T")), p["name"]


def test_blas_limit_is_the_step_flops_over_the_rates():
    L, H, C, T, B = (ODD[k] for k in ("n_layer", "n_head", "n_embd", "block_size", "batch_size"))
    total = 3 * (2 * B * T * (12 * L * C * C + C * 37) + L * 4 * B * H * T * T * (C // H))
    keys = {tuple(p[k] for k in ("batch", "m", "k", "n", "trans_a", "trans_b"))
            for p in bench_scaling.step_products(ODD, 37)}
    limit = bench_scaling.blas_limit(ODD, {key: 4.0 for key in keys}, 37)  # every product at 4 GFLOP/s
    assert limit["flops"] == total
    assert limit["seconds"] == pytest.approx(total / 4e9) and limit["gflops"] == pytest.approx(4.0)


def test_sizes_are_2048_tokens_from_02M_to_10M_parameters_with_the_course_presets():
    sizes = bench_scaling.SIZES
    assert all(s["batch_size"] * s["block_size"] == 2048 for s in sizes.values())
    for preset in ("base", "large"):
        assert sizes[preset] == {k: COURSE_PRESETS[preset][k] for k in sizes[preset]}
    params = {name: gpt_parameters(s["n_layer"], s["n_embd"], s["block_size"], 256) for name, s in sizes.items()}
    assert 0.15e6 < params["xs"] < 0.3e6 and 8e6 < params["xl"] < 12e6
    assert list(params.values()) == sorted(params.values())
    xs = sizes["xs"]  # the hand count agrees with the model the benchmark builds
    model = GPT(GPTConfig(vocab_size=256, block_size=xs["block_size"], n_layer=xs["n_layer"], n_head=xs["n_head"],
                          n_embd=xs["n_embd"]))
    assert model.num_parameters() == params["xs"]


def test_no_torch_smoke_run_prints_a_row_per_size():
    cmd = [sys.executable, SCRIPT, "--no-torch", "--sizes", "xs", "--steps", "1", "--rounds", "1",
           "--blas-repeats", "1", "--json"]
    done = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.strip().splitlines()
    report = json.loads(lines[-1])
    assert list(report["sizes"]) == ["xs"]
    row = report["sizes"]["xs"]
    assert list(row["steps"]) == ["tinyft numba"]  # --no-torch: no torch worker
    ours = row["steps"]["tinyft numba"]
    assert ours["tokens_per_s"] > 0 and ours["peak_mib"] > ours["rss_before_mib"] > 0
    assert row["params"] == gpt_parameters(4, 64, 128, 256)
    assert row["blas_limit_tokens_per_s"] == pytest.approx(2048 / row["blas"]["seconds"])
    assert row["tinyft_share_of_limit"] == pytest.approx(row["blas"]["seconds"] / (ours["median_ms"] / 1e3))
    table_rows = [line for line in lines[:-1] if line.split()[:1] == ["xs"]]
    assert len(table_rows) == 3  # speed, where the step goes, memory
    assert "n/a" in table_rows[0]  # no torch figure made up


def test_unknown_size_is_an_error_naming_it_and_the_valid_ones(capsys):
    with pytest.raises(SystemExit) as exit_:
        bench_scaling.main(["--sizes", "xs,huge"])
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert "'huge'" in err and "xs, ref, base, large, xl" in err
