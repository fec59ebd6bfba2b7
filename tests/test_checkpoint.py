"""Checkpoints: bit-exact round trips, bit-identical resume, and every damaged file is a CheckpointError."""

import io
import json
import os
import zipfile

import numpy as np
import pytest

from tinyft import checkpoint, optim
from tinyft.autograd import get_rng_state, manual_seed
from tinyft.checkpoint import CheckpointError
from tinyft.nn import GPT, GPTConfig

CONFIG = dict(vocab_size=13, block_size=8, n_layer=2, n_head=2, n_embd=16, dropout=0.0)


def make_model(seed=0, **overrides):
    manual_seed(seed)
    return GPT(GPTConfig(**{**CONFIG, **overrides}))


def make_optimizer(model):
    return optim.AdamW(optim.param_groups_for_weight_decay(model, 0.1), lr=1e-2, betas=(0.9, 0.95))


def fixed_batches(n, seed=123, batch_size=2):
    rng = np.random.default_rng(seed)
    T, V = CONFIG["block_size"], CONFIG["vocab_size"]
    return [(rng.integers(0, V, size=(batch_size, T)), rng.integers(0, V, size=(batch_size, T))) for _ in range(n)]


def train(model, optimizer, batches, first_step=0, total_steps=10):
    for step, (x, y) in enumerate(batches, start=first_step):
        optim.set_lr(optimizer, optim.cosine_schedule(step, 1e-2, 2, total_steps))
        _, loss = model(x, y)
        optimizer.zero_grad()
        loss.backward()
        optim.clip_grad_norm(model.parameters(), 1.0)
        optimizer.step()


def assert_same_arrays(a, b):
    assert a.keys() == b.keys()
    for name in a:
        assert a[name].dtype == b[name].dtype and np.array_equal(a[name], b[name]), name


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """A tiny GPT + AdamW after 3 steps, saved; shared by the read-only tests."""
    path = str(tmp_path_factory.mktemp("ckpt") / "ckpt.npz")
    model = make_model()
    optimizer = make_optimizer(model)
    train(model, optimizer, fixed_batches(3))
    checkpoint.save(path, model, optimizer, step=3, tokenizer={"kind": "char", "chars": "abc"}, note="hello")
    return path, model, optimizer


# --- round trips -------------------------------------------------------------------------------------------


def test_model_and_optimizer_round_trip_bit_exactly(saved):
    path, model, optimizer = saved
    ckpt = checkpoint.load(path)
    assert_same_arrays(ckpt.model_state, model.state_dict())
    expected = optimizer.state_dict()
    assert ckpt.optimizer_state["param_groups"] == json.loads(json.dumps(expected["param_groups"]))
    assert ckpt.optimizer_state["state"].keys() == expected["state"].keys()
    for i in expected["state"]:
        assert_same_arrays(ckpt.optimizer_state["state"][i], expected["state"][i])

    fresh_model = make_model(seed=99)
    fresh_optimizer = make_optimizer(fresh_model)
    checkpoint.restore(path, fresh_model, fresh_optimizer)
    assert_same_arrays(fresh_model.state_dict(), model.state_dict())
    restored = fresh_optimizer.state_dict()
    assert restored["param_groups"] == expected["param_groups"]
    for i in expected["state"]:
        assert_same_arrays(restored["state"][i], expected["state"][i])


def test_meta_holds_config_step_tokenizer_rng_and_extra_keys(saved):
    meta = checkpoint.load(saved[0]).meta
    assert meta["format"] == "tinyft-checkpoint" and meta["version"] == 1
    assert meta["config"] == saved[1].config.to_dict() and meta["model_class"] == "GPT"
    assert meta["step"] == 3 and meta["tokenizer"] == {"kind": "char", "chars": "abc"} and meta["note"] == "hello"
    assert meta["optimizer"]["class"] == "AdamW" and meta["optimizer"]["param_groups"][0]["weight_decay"] == 0.1
    assert isinstance(meta["rng_state"], dict)


@pytest.mark.parametrize("rebuild", ["restore", "load_model_and_optimizer"])
def test_resume_after_save_equals_uninterrupted_training_bit_for_bit(tmp_path, rebuild):
    n, m = 3, 3
    batches = fixed_batches(n + m)
    uninterrupted = make_model()
    opt = make_optimizer(uninterrupted)
    train(uninterrupted, opt, batches)

    first = make_model()
    opt_first = make_optimizer(first)
    train(first, opt_first, batches[:n])
    path = tmp_path / "ckpt.npz"
    checkpoint.save(path, first, opt_first, step=n)
    del first, opt_first

    if rebuild == "restore":
        resumed = make_model(seed=7)  # different initial weights: everything must come from the file
        opt_resumed = make_optimizer(resumed)
        meta = checkpoint.restore(path, resumed, opt_resumed)
    else:
        resumed, opt_resumed, meta = checkpoint.load_model_and_optimizer(path)
    train(resumed, opt_resumed, batches[n:], first_step=meta["step"])
    assert_same_arrays(resumed.state_dict(), uninterrupted.state_dict())


def test_gpt_with_exact_gelu_saves_and_loads_as_exact(tmp_path):
    model = make_model(seed=4, gelu="exact")
    path = str(tmp_path / "exact.npz")
    checkpoint.save(path, model)
    assert checkpoint.load(path).config["gelu"] == "exact"
    loaded = checkpoint.load_model(path)
    assert loaded.config == model.config and loaded.config.gelu == "exact"
    idx = np.array([[1, 2, 3, 4]])
    assert np.array_equal(loaded(idx)[0].data, model(idx)[0].data)  # same weights, same GELU: same logits


def test_checkpoint_saved_before_the_gelu_field_loads_as_tanh(tmp_path):
    """An older checkpoint's config has no "gelu": rewrite one without it (as the older code wrote it)."""
    model = make_model(seed=5)
    path = str(tmp_path / "old.npz")
    config = model.config.to_dict()
    del config["gelu"]
    model.config.to_dict = lambda: dict(config)  # what GPTConfig.to_dict returned before the field existed
    checkpoint.save(path, model)
    assert "gelu" not in checkpoint.load(path).config
    assert checkpoint.load_model(path).config.gelu == "tanh"


def test_load_model_rebuilds_an_equal_model_and_leaves_the_rng_alone(saved):
    path, model, _ = saved
    rng_before = get_rng_state()
    rebuilt = checkpoint.load_model(path)
    assert get_rng_state() == rng_before
    assert isinstance(rebuilt, GPT) and rebuilt.config.to_dict() == model.config.to_dict()
    assert_same_arrays(rebuilt.state_dict(), model.state_dict())
    x, y = fixed_batches(1, seed=5)[0]
    logits_a, loss_a = model(x, y)
    logits_b, loss_b = rebuilt(x, y)
    assert np.array_equal(logits_a.data, logits_b.data) and loss_a.item() == loss_b.item()


def test_restore_rng_puts_the_saved_random_state_back(tmp_path):
    model = make_model()
    manual_seed(42)
    expected = get_rng_state()
    checkpoint.save(tmp_path / "c.npz", model)
    manual_seed(7)
    checkpoint.restore(tmp_path / "c.npz", model, restore_rng=True)
    assert get_rng_state() == expected


# --- damaged files ---------------------------------------------------------------------------------------------


def test_fifty_plus_truncated_or_byte_flipped_files_each_raise_checkpoint_error(saved, tmp_path):
    data = open(saved[0], "rb").read()
    with zipfile.ZipFile(io.BytesIO(data)) as zf:
        central_directory = zf.start_dir  # where the zip's table of contents begins
    wte = checkpoint.load(saved[0]).model_state["transformer.wte.weight"]
    wte_at = data.find(wte.tobytes())  # the raw float32 bytes of one array inside the file
    assert central_directory > 0 and wte_at > 0

    rng = np.random.default_rng(2024)
    positions = list(rng.integers(0, len(data), size=30))  # anywhere in the file
    positions += list(rng.integers(central_directory, len(data), size=15))  # central directory, EOCD, digest
    positions += list(rng.integers(wte_at, wte_at + wte.nbytes, size=10))  # array data
    positions += [0, 4, 30, central_directory, len(data) - 1]  # zip magic, local header, directory, last byte
    lengths = [0, 1, 3, 100, central_directory, len(data) - 1] + list(rng.integers(1, len(data), size=10))

    damaged = []
    for pos in positions:
        flipped = bytearray(data)
        flipped[pos] ^= 1 << int(rng.integers(0, 8))
        damaged.append((f"flip at {pos}", bytes(flipped)))
    damaged += [(f"truncated to {n}", data[:n]) for n in lengths]
    assert len(damaged) >= 50

    path = tmp_path / "damaged.npz"
    for what, content in damaged:
        path.write_bytes(content)
        with pytest.raises(CheckpointError):
            checkpoint.load(path)
            pytest.fail(f"{what}: loaded without error")


def rewrite_npz(src, dst, replace=None, drop=(), add=None):
    """Copy a checkpoint's zip entry by entry, changing some: a well-formed zip with altered contents."""
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w") as zout:
        for info in zin.infolist():
            name = info.filename[:-len(".npy")]
            if name in drop:
                continue
            if replace and name in replace:
                buf = io.BytesIO()
                np.lib.format.write_array(buf, replace[name], allow_pickle=True)
                zout.writestr(info.filename, buf.getvalue())
            else:
                zout.writestr(info, zin.read(info))
        for name, array in (add or {}).items():
            buf = io.BytesIO()
            np.lib.format.write_array(buf, array, allow_pickle=True)
            zout.writestr(name + ".npy", buf.getvalue())


def meta_array(meta):
    return np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8)


def test_edited_array_in_a_well_formed_zip_is_a_checksum_mismatch_naming_the_entry(saved, tmp_path):
    wte = checkpoint.load(saved[0]).model_state["transformer.wte.weight"].copy()
    wte[0, 0] += 1.0
    rewrite_npz(saved[0], tmp_path / "edited.npz", replace={"model/transformer.wte.weight": wte})
    with pytest.raises(CheckpointError, match="checksum mismatch in entry model/transformer.wte.weight"):
        checkpoint.load(tmp_path / "edited.npz")


def test_missing_entry_and_changed_shape_are_named(saved, tmp_path):
    rewrite_npz(saved[0], tmp_path / "dropped.npz", drop={"model/lm_head.weight"})
    with pytest.raises(CheckpointError, match="missing: model/lm_head.weight"):
        checkpoint.load(tmp_path / "dropped.npz")
    rewrite_npz(saved[0], tmp_path / "reshaped.npz", replace={"model/transformer.wpe.weight": np.zeros((2, 2), "<f4")})
    with pytest.raises(CheckpointError, match=r"entry model/transformer.wpe.weight is <f4 \(2, 2\)"):
        checkpoint.load(tmp_path / "reshaped.npz")


def test_non_npz_file_is_a_checkpoint_error(tmp_path):
    (tmp_path / "text.npz").write_text("just some text, not a zip")
    with pytest.raises(CheckpointError, match="not an .npz"):
        checkpoint.load(tmp_path / "text.npz")
    np.save(tmp_path / "plain.npy", np.zeros(3))
    with pytest.raises(CheckpointError, match="not an .npz"):
        checkpoint.load(tmp_path / "plain.npy")


def test_missing_file_is_a_checkpoint_error_naming_it(tmp_path):
    with pytest.raises(CheckpointError, match="nowhere.npz"):
        checkpoint.load(tmp_path / "nowhere.npz")


def test_npz_without_meta_is_a_checkpoint_error(tmp_path):
    np.savez(tmp_path / "plain.npz", weights=np.zeros(3))
    with pytest.raises(CheckpointError, match="no __meta__ entry"):
        checkpoint.load(tmp_path / "plain.npz")


@pytest.mark.parametrize("meta, message", [
    ({"format": "someone-elses-format", "version": 1, "arrays": {}}, "format 'someone-elses-format'"),
    ({"format": "tinyft-checkpoint", "version": 99, "arrays": {}}, "version 99 is not supported"),
    ([1, 2, 3], "must hold a JSON object"),
])
def test_meta_from_another_format_or_version_is_a_checkpoint_error(tmp_path, meta, message):
    np.savez(tmp_path / "other.npz", __meta__=meta_array(meta))
    with pytest.raises(CheckpointError, match=message):
        checkpoint.load(tmp_path / "other.npz")


def test_meta_that_is_not_json_is_a_checkpoint_error(tmp_path):
    np.savez(tmp_path / "bad.npz", __meta__=np.frombuffer(b"{not json", dtype=np.uint8))
    with pytest.raises(CheckpointError, match="__meta__ is not valid UTF-8 JSON"):
        checkpoint.load(tmp_path / "bad.npz")


def test_object_array_is_refused_without_unpickling(saved, tmp_path):
    rewrite_npz(saved[0], tmp_path / "objects.npz", add={"model/evil": np.array([{"x": 1}], dtype=object)})
    with pytest.raises(CheckpointError, match="entry model/evil holds Python objects"):
        checkpoint.load(tmp_path / "objects.npz")
    np.savez(tmp_path / "meta_objects.npz", __meta__=np.array([{"format": 1}], dtype=object))
    with pytest.raises(CheckpointError, match="entry __meta__ holds Python objects"):
        checkpoint.load(tmp_path / "meta_objects.npz")


def test_checkpoint_whose_shapes_do_not_fit_the_model_names_the_entry(saved):
    other = make_model(n_embd=8)
    with pytest.raises(CheckpointError, match=r"model/transformer.wte.weight has shape \(13, 16\) in the file, "
                                              r"\(13, 8\) in the model"):
        checkpoint.restore(saved[0], other)
    deeper = make_model(n_layer=3)
    with pytest.raises(CheckpointError, match=r"model/transformer.h.2.ln_1.weight missing from the file"):
        checkpoint.restore(saved[0], deeper)


def test_optimizer_state_that_does_not_fit_is_a_checkpoint_error(saved):
    model = make_model()
    with pytest.raises(CheckpointError, match="optimizer state"):
        checkpoint.restore(saved[0], model, optim.SGD(model.parameters(), lr=0.1))


# --- saving safely ---------------------------------------------------------------------------------------------


def test_meta_that_is_not_json_serialisable_is_a_type_error_and_the_old_file_survives(saved, tmp_path):
    path = tmp_path / "ckpt.npz"
    model = saved[1]
    checkpoint.save(path, model)
    before = path.read_bytes()
    with pytest.raises(TypeError, match="meta\\['when'\\]"):
        checkpoint.save(path, model, when=object())
    assert path.read_bytes() == before and os.listdir(tmp_path) == ["ckpt.npz"]


def test_save_failing_mid_write_leaves_previous_file_byte_identical_and_no_temp_files(saved, tmp_path, monkeypatch):
    path = tmp_path / "ckpt.npz"
    model, optimizer = saved[1], saved[2]
    checkpoint.save(path, model, optimizer, step=1)
    before = path.read_bytes()
    real_write_array, calls = np.lib.format.write_array, []

    def write_then_fail(fp, array, **kw):
        calls.append(1)
        if len(calls) == 5:  # a few arrays are already on disk in the temp file
            fp.write(b"half an array")
            raise OSError("No space left on device")
        return real_write_array(fp, array, **kw)

    monkeypatch.setattr(np.lib.format, "write_array", write_then_fail)
    with pytest.raises(OSError, match="No space left"):
        checkpoint.save(path, model, optimizer, step=2)
    assert len(calls) == 5
    assert path.read_bytes() == before and os.listdir(tmp_path) == ["ckpt.npz"]
    monkeypatch.undo()
    assert checkpoint.load(path).meta["step"] == 1


def test_save_into_a_missing_folder_names_the_folder(saved, tmp_path):
    with pytest.raises(FileNotFoundError, match="no_such_folder"):
        checkpoint.save(tmp_path / "no_such_folder" / "ckpt.npz", saved[1])


def test_reserved_meta_keys_are_refused(saved, tmp_path):
    with pytest.raises(ValueError, match="reserved"):
        checkpoint.save(tmp_path / "c.npz", saved[1], format="mine")


def test_save_writes_a_plain_npz_that_numpy_reads_without_pickle(saved):
    with np.load(saved[0], allow_pickle=False) as npz:
        assert "__meta__" in npz.files and "model/transformer.wte.weight" in npz.files
        assert "optim/state/0/m" in npz.files


def test_atomic_write_replaces_the_whole_file_or_leaves_the_old_one(tmp_path):
    path = tmp_path / "table.csv"
    checkpoint.atomic_write(path, "a,b\n1,2\n")  # str: UTF-8
    assert path.read_text(encoding="utf-8") == "a,b\n1,2\n"
    checkpoint.atomic_write(path, b"\x00\x01")  # bytes as they are
    assert path.read_bytes() == b"\x00\x01"

    def half_then_interrupted(f):
        f.write(b"half a table")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        checkpoint.atomic_write(path, half_then_interrupted)
    assert path.read_bytes() == b"\x00\x01" and os.listdir(tmp_path) == ["table.csv"]
    with pytest.raises(FileNotFoundError, match="missing_folder"):
        checkpoint.atomic_write(tmp_path / "missing_folder" / "x.txt", "x")
