"""The claims runner: `python -m tinyft claims --quick` end to end on the tiny course model, the rows' numbers
recomputed from their per-seed values by formulas written here, and the choosing helpers shown to read
validation scores only."""

import json
import math

import numpy as np
import pytest

from tinyft import claims, cli
from tinyft.experiments import VERDICTS


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return str(tmp_path_factory.mktemp("tinyft_cache"))


def test_claims_quick_end_to_end(cache, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("TINYFT_CACHE", cache)
    out = tmp_path / "claims"
    assert cli.main(["claims", "--quick", "--only", "C1,C3", "--out", str(out), "--json"]) == 0
    printed = capsys.readouterr().out.strip().splitlines()
    table = json.loads(printed[-1])["claims"]
    assert [r["id"] for r in table] == ["C1", "C1", "C3", "C3"]
    saved = json.loads((out / "claims.json").read_text())
    for row in table:
        assert set(row) == {"id", "claim", "metric", "value", "ci95", "seeds", "verdict"}
        assert row["seeds"] == 2 and row["verdict"] in VERDICTS
    for row in saved["claims"]["C1"] + saved["claims"]["C3"]:
        # the row's mean, interval and verdict, recomputed from its per-seed values (t(0.975, 1) = 12.7062)
        v = np.array(row["values"])
        half = 12.706204736 * v.std(ddof=1) / math.sqrt(2)
        assert row["value"] == pytest.approx(v.mean())
        assert row["ci95"] == pytest.approx([v.mean() - half, v.mean() + half])
        lo, hi = row["ci95"]
        assert row["verdict"] == ("supported" if lo > 0 else "not supported" if hi < 0 else "within noise")
    # a rerun with the same settings reads the table back instead of training again
    assert cli.main(["claims", "--quick", "--only", "C1", "--out", str(out), "--markdown"]) == 0
    captured = capsys.readouterr()
    assert "C1: read back from" in captured.err
    markdown = [line for line in captured.out.splitlines() if line.startswith("| C1 |")]
    assert len(markdown) == 2 and all(f"**{r['verdict']}**" in line for r, line in zip(table, markdown))


@pytest.mark.parametrize("argv, message", [
    (["claims", "--only", "C12"], "unknown claim id"),
    (["claims", "--quick", "--seeds", "0"], "--seeds must be at least 1"),
])
def test_claims_bad_input(argv, message, capsys, tmp_path):
    assert cli.main(argv + ["--out", str(tmp_path / "x")]) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "x").exists()


def test_paired_row_is_the_interval_of_the_differences():
    a, b = [0.60, 0.70, 0.65], [0.50, 0.52, 0.55]
    row = claims._paired_row("C0", "a beats b", "accuracy", a, b)
    d = np.array(a) - np.array(b)
    half = 4.302652730 * d.std(ddof=1) / math.sqrt(3)  # t(0.975, 2)
    assert row["value"] == pytest.approx(d.mean())
    assert row["ci95"] == pytest.approx([d.mean() - half, d.mean() + half])
    assert row["verdict"] == "supported"
    one = claims._paired_row("C0", "a beats b", "accuracy", [0.6], [0.5])
    assert one["ci95"] == [None, None] and one["verdict"] == "one seed"


def test_bias_amplification_by_hand():
    class E:
        def __init__(self, label):
            self.label = label

    train = [E(0)] * 60 + [E(1)] * 20 + [E(2)] * 20  # class 0 over-represented: 0.6 > 1/3
    predictions = [0] * 75 + [1] * 15 + [2] * 10  # predicted share of class 0: 0.75
    assert claims.bias_amplification(train, predictions, 3) == pytest.approx(0.75 - 0.60)


class ValidationOnly(dict):
    """A run's numbers where reading a test or shifted score fails the test."""

    def __getitem__(self, key):
        if key in ("test", "shifted") or key.startswith("test"):
            raise AssertionError(f"a choosing helper read {key!r}")
        return dict.__getitem__(self, key)


def test_best_lr_never_reads_test_scores():
    class FakeTask:
        higher_is_better = True

    class FakeBench(claims.Bench):
        def __init__(self):
            self.settings = claims.ClaimSettings(lrs=(1e-4, 1e-3, 1e-2), tuning_seed=7)
            self.seen = []

        def task(self, name, *args, **kwargs):
            return FakeTask()

        def run(self, task_name, seed, lr, **kwargs):
            self.seen.append(seed)
            return ValidationOnly(val={1e-4: 0.5, 1e-3: 0.8, 1e-2: 0.6}[lr], test=0.99)

    bench = FakeBench()
    assert bench.best_lr("order") == 1e-3
    assert set(bench.seen) == {7}  # only the tuning seed, never a reported one
