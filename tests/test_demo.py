"""The main job: `python -m tinyft demo` runs pretrain -> fine-tune -> forgetting and prints a readable table."""

from tinyft.demo import DEMO_STRATEGIES, run_demo, run_engine_demo

TINY = dict(n_layer=1, n_head=2, n_embd=16, block_size=16, batch_size=4, eval_batches=2, sample_tokens=5)


def test_demo_pretrains_finetunes_and_reports_forgetting_for_each_strategy(tmp_path):
    lines = []
    result = run_demo(out=str(tmp_path), pretrain_steps=6, finetune_steps=2, progress=False, log=lines.append, **TINY)
    assert [r["strategy"] for r in result["runs"]] == list(DEMO_STRATEGIES)
    for run in result["runs"]:
        assert run["forgetting"] == run["source_after"] - run["source_before"]
        assert 0 < run["trainable_params"] <= result["total_params"]
    table = result["table"]
    assert "code loss" in table and "broad loss" in table and "forgetting" in table
    assert table in "\n".join(lines)  # printed, not only returned
    lora = next(r for r in result["runs"] if r["strategy"] == "lora")
    assert lora["trainable_params"] < result["total_params"] / 10


def test_demo_reuses_its_pretrained_checkpoint(tmp_path):
    first = run_demo(out=str(tmp_path), pretrain_steps=4, finetune_steps=1, progress=False, log=lambda *a: None, **TINY)
    again = run_demo(out=str(tmp_path), pretrain_steps=4, finetune_steps=1, progress=False, log=lambda *a: None, **TINY)
    assert again["pretrain"]["wall_s"] == first["pretrain"]["wall_s"]  # no pretraining step ran again
    assert again["runs"] == first["runs"]  # finished fine-tuning runs are read back, not redone


def test_engine_demo_learns_two_moons():
    result = run_engine_demo(steps=300, log_every=100, out=lambda *a: None)
    assert result["accuracy"] >= 0.99
