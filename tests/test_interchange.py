"""Interchange (tinyft/interchange.py): names, dtypes, optimizer moments and safetensors, without PyTorch.

Map of this file:
  1. names and shapes: nanoGPT's order from the config equals a GPT's; prefixes and buffers stripped; the tie
  2. number formats: bfloat16 bits and float16 against values computed here from the IEEE layouts
  3. optimizer: tinyft AdamW moments land on nanoGPT's two groups by name, and come back bit-exactly
  4. safetensors: bit-exact round trips, a file written here by hand is read, a table of damaged files
  5. files: export_safetensors / import_checkpoint end to end, meta.pkl read safely, every bad argument
  6. with the safetensors package: it reads our file and we read its file (skipped when it is absent)
  7. with PyTorch: export_nanogpt / import_checkpoint round trip (skipped when torch is absent)
"""

import json
import math
import os
import pickle
import struct
import warnings

import numpy as np
import pytest

import tinyft
from tinyft import checkpoint, export, interchange, optim
from tinyft.interchange import InterchangeError, InterchangeWarning, SafetensorsError
from tinyft.nn import GPT, GPTConfig
from tinyft.tokenizers import CharTokenizer, tokenizer_from_dict

TEXT = "the quick brown fox jumps over the lazy dog. THE END!"
TINY = dict(block_size=8, n_layer=2, n_head=2, n_embd=8)


def make_model(seed=0, vocab_size=None, **overrides):
    tinyft.manual_seed(seed)
    vocab_size = vocab_size or CharTokenizer.build(TEXT).vocab_size
    return GPT(GPTConfig(vocab_size=vocab_size, **{**TINY, **overrides}))


def train_a_little(model, steps=3, seed=1):
    """AdamW in tinyft's groups (embeddings not decayed), a few steps, so the moments are not zero."""
    optimizer = optim.AdamW(optim.param_groups_for_weight_decay(model, 0.1), lr=1e-2, betas=(0.9, 0.95))
    rng = np.random.default_rng(seed)
    V, T = model.config.vocab_size, model.config.block_size
    for _ in range(steps):
        _, loss = model(rng.integers(0, V, (2, T)), rng.integers(0, V, (2, T)))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return optimizer


@pytest.fixture
def saved(tmp_path):
    """A trained tiny GPT (exact GELU) with AdamW state and a character tokenizer, saved as a tinyft checkpoint."""
    model = make_model(gelu="exact")
    optimizer = train_a_little(model)
    path = str(tmp_path / "ckpt.npz")
    checkpoint.save(path, model, optimizer, step=3, tokenizer=CharTokenizer.build(TEXT).to_dict(),
                    history=[{"step": 2, "val_loss": 2.5}, {"step": 3, "val_loss": 2.25}])
    return path, model, optimizer


# ----------------------------------------------------------------------------------------------------
# 1. names and shapes
# ----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("bias", [True, False])
def test_parameter_shapes_from_the_config_equal_a_gpts_names_order_and_shapes(bias):
    model = make_model(bias=bias)
    want = {name: p.shape for name, p in model.named_parameters()}  # the oracle: the model itself
    got = interchange.parameter_shapes(model.config)
    assert list(got) == list(want) and got == want
    sd_shapes = {name: a.shape for name, a in model.state_dict().items()}
    assert list(interchange.state_dict_shapes(model.config).items()) == list(sd_shapes.items())


def test_nanogpt_groups_are_every_2d_parameter_then_the_rest_in_named_order():
    model = make_model()
    decay, no_decay = interchange.nanogpt_param_groups(model.config)
    named = list(model.named_parameters())
    assert decay == [n for n, p in named if p.ndim >= 2]  # nanoGPT: "Any parameters that is 2D will be weight decayed"
    assert no_decay == [n for n, p in named if p.ndim < 2]
    assert decay[:2] == ["transformer.wte.weight", "transformer.wpe.weight"] and "lm_head.weight" not in decay


def test_to_nanogpt_state_keeps_names_and_holds_the_tied_matrix_once():
    model = make_model()
    out = interchange.to_nanogpt_state(model.state_dict(), model.config)
    assert list(out) == list(model.state_dict())
    assert out["lm_head.weight"] is out["transformer.wte.weight"]  # one array, two names (as nanoGPT's tensor)
    for name, array in model.state_dict().items():
        assert np.array_equal(out[name], array)


def test_to_nanogpt_state_names_missing_extra_and_misshapen_entries_and_refuses_an_untied_head():
    model = make_model()
    sd = model.state_dict()
    del sd["transformer.h.1.ln_2.bias"]
    sd["transformer.h.0.attn.c_attn.weight"] = np.zeros((3, 3), np.float32)
    sd["transformer.h.0.mlp.c_fc.lora_A"] = np.zeros((2, 8), np.float32)
    with pytest.raises(InterchangeError) as err:
        interchange.to_nanogpt_state(sd, model.config)
    message = str(err.value)
    assert "missing transformer.h.1.ln_2.bias" in message
    assert "transformer.h.0.attn.c_attn.weight has shape (3, 3), expected (24, 8)" in message
    assert "unexpected transformer.h.0.mlp.c_fc.lora_A" in message and "export='merged'" in message
    untied = model.state_dict()
    untied["lm_head.weight"] = untied["lm_head.weight"] + 1.0
    with pytest.raises(InterchangeError, match="lm_head.weight differ"):
        interchange.to_nanogpt_state(untied, model.config)


def test_clean_strips_compiled_prefix_and_drops_mask_buffers_but_keeps_c_attn_bias():
    model = make_model()
    raw = {"_orig_mod." + name: a for name, a in model.state_dict().items()}
    raw["_orig_mod.transformer.h.0.attn.bias"] = np.tril(np.ones((1, 1, 8, 8), np.float32))  # older torch's mask
    raw["transformer.h.1.attn.masked_bias"] = np.float32(-1e4)  # Hugging Face's
    cleaned, done = interchange.clean_nanogpt_state(raw)
    assert list(cleaned) == list(model.state_dict())  # c_attn.bias and c_proj.bias stay: they are weights
    assert any("_orig_mod." in d and str(len(model.state_dict())) in d for d in done)
    assert any("dropped 2 attention-mask buffers" in d for d in done)
    with pytest.raises(InterchangeError, match="holds transformer.wpe.weight twice"):
        interchange.clean_nanogpt_state({"transformer.wpe.weight": 1, "_orig_mod.transformer.wpe.weight": 2})


def test_from_nanogpt_state_fills_the_tied_name_and_refuses_different_values():
    model = make_model()
    sd = model.state_dict()
    once = {k: v for k, v in sd.items() if k != "lm_head.weight"}  # safetensors stores the tied matrix once
    back = interchange.from_nanogpt_state(once, model.config)
    assert list(back) == list(sd) and back["lm_head.weight"] is back["transformer.wte.weight"]
    model.load_state_dict(back)
    untied = {**sd, "lm_head.weight": np.zeros_like(sd["lm_head.weight"])}
    with pytest.raises(InterchangeError, match="untied model cannot be imported"):
        interchange.from_nanogpt_state(untied, model.config)


def test_model_args_hold_exactly_nanogpts_fields_and_come_back_with_the_exact_gelu():
    config = make_model(gelu="tanh", bias=False).config
    args = interchange.model_args_from_config(config)
    assert args == dict(n_layer=2, n_head=2, n_embd=8, block_size=8, bias=False, vocab_size=config.vocab_size,
                        dropout=0.0)  # nanoGPT's GPTConfig(**model_args) would refuse a "gelu" key
    back = interchange.config_from_model_args(args)
    assert back.gelu == "exact"  # nanoGPT's MLP is nn.GELU()
    assert {**back.to_dict(), "gelu": "tanh"} == config.to_dict()
    with pytest.raises(InterchangeError, match="does not have: rotary"):
        interchange.config_from_model_args({**args, "rotary": True})
    with pytest.raises(InterchangeError, match="lacks n_head"):
        interchange.config_from_model_args({k: v for k, v in args.items() if k != "n_head"})


def test_infer_config_reads_sizes_off_the_shapes_and_asks_for_n_head():
    model = make_model(bias=False)
    config = interchange.infer_config(model.state_dict(), n_head=2)
    assert {**config.to_dict(), "gelu": "tanh"} == model.config.to_dict()
    with pytest.raises(InterchangeError, match="pass n_head"):
        interchange.infer_config(model.state_dict(), n_head=None)


def test_only_a_tanh_model_gets_the_gelu_warning():
    assert interchange.gelu_warning(make_model(gelu="exact").config) is None
    text = interchange.gelu_warning(make_model(gelu="tanh").config)
    assert "tanh GELU" in text and "logits will differ" in text and "exact" in text


# ----------------------------------------------------------------------------------------------------
# 2. number formats
# ----------------------------------------------------------------------------------------------------


def bfloat16_value(bits):
    """The number a bfloat16 bit pattern stands for, from its layout: sign, 8 exponent bits, 7 mantissa bits."""
    sign = -1.0 if bits >> 15 else 1.0
    exponent, mantissa = (bits >> 7) & 0xFF, bits & 0x7F
    if exponent == 0xFF:
        return sign * math.inf if mantissa == 0 else math.nan
    if exponent == 0:
        return sign * mantissa / 128 * 2.0 ** -126  # subnormal
    return sign * (1 + mantissa / 128) * 2.0 ** (exponent - 127)


def test_bfloat16_bits_become_the_float32_their_layout_says():
    bits = np.array([0x3F80, 0xC000, 0x4049, 0x0001, 0x0080, 0x7F7F, 0xFF80, 0x8000, 0x3EAB], dtype=np.uint16)
    got = interchange.bfloat16_bits_to_float32(bits.reshape(3, 3))
    assert got.dtype == np.float32 and got.shape == (3, 3)
    want = [bfloat16_value(int(b)) for b in bits]
    assert want[:3] == [1.0, -2.0, 3.140625]  # the layout, checked by hand once
    np.testing.assert_array_equal(got.ravel(), np.array(want, dtype=np.float64))
    assert np.signbit(got.ravel()[7])  # -0.0 keeps its sign


def test_float32_to_bfloat16_rounds_to_nearest_even_and_round_trips_every_pattern():
    ulp = 2.0 ** -7  # bfloat16's spacing just above 1
    x = np.array([1 + ulp / 2, 1 + 3 * ulp / 2, 1 + ulp / 2 + 2 ** -20, -(1 + ulp / 4)], dtype=np.float32)
    got = interchange.bfloat16_bits_to_float32(interchange.float32_to_bfloat16_bits(x))
    np.testing.assert_array_equal(got, [1.0, 1 + 2 * ulp, 1 + ulp, -1.0])  # ties go to the even mantissa
    patterns = np.arange(0, 2 ** 16, dtype=np.uint32).astype(np.uint16)
    finite = np.isfinite(interchange.bfloat16_bits_to_float32(patterns))
    again = interchange.float32_to_bfloat16_bits(interchange.bfloat16_bits_to_float32(patterns))
    np.testing.assert_array_equal(again[finite], patterns[finite])


def test_float16_is_cast_exactly_with_a_note_and_integers_are_refused():
    halves = np.array([2.0 ** -24, 65504.0, -0.5, 1 / 3], dtype=np.float16)  # smallest subnormal, largest, ...
    casts = []
    got = interchange.as_float32("w", halves, "float16", casts)
    np.testing.assert_array_equal(got, [2.0 ** -24, 65504.0, -0.5, 0.333251953125])  # 1/3 as float16 holds it
    assert got.dtype == np.float32 and casts == [("w", "float16")]
    assert "exactly" in interchange._cast_note(casts)
    with pytest.raises(InterchangeError, match="w holds int64 values, expected floats"):
        interchange.as_float32("w", np.arange(3), "int64", [])


# ----------------------------------------------------------------------------------------------------
# 3. optimizer
# ----------------------------------------------------------------------------------------------------


def test_tinyft_adamw_moments_land_on_nanogpts_groups_by_name_and_come_back_bit_exactly():
    model = make_model()
    optimizer = train_a_little(model)
    notes = []
    with pytest.warns(InterchangeWarning, match="did not decay transformer.wte.weight, transformer.wpe.weight"):
        torch_like = interchange.optimizer_to_nanogpt(optimizer.state_dict(), model.config, notes)
    decay, no_decay = interchange.nanogpt_param_groups(model.config)
    groups = torch_like["param_groups"]
    n = len(decay)
    assert [g["params"] for g in groups] == [list(range(n)), list(range(n, n + len(no_decay)))]
    assert [g["weight_decay"] for g in groups] == [0.1, 0.0] and groups[0]["betas"] == (0.9, 0.95)
    ours = {name: optimizer.state[i] for i, _, _, name in optimizer._indexed()}  # tinyft's state, by name
    for index, name in enumerate(decay + no_decay):
        entry = torch_like["state"][index]
        assert np.array_equal(entry["exp_avg"], ours[name]["m"])
        assert np.array_equal(entry["exp_avg_sq"], ours[name]["v"])
        assert entry["step"] == 3.0

    by_name, settings = interchange.optimizer_from_nanogpt(torch_like, model.config, [])
    rebuilt = interchange.build_tinyft_adamw(model, by_name, settings)
    a, b = optimizer.state_dict(), rebuilt.state_dict()
    assert a["param_groups"] == b["param_groups"]
    assert a["state"].keys() == b["state"].keys()
    for i in a["state"]:
        for key in ("step", "m", "v"):
            x, y = a["state"][i][key], b["state"][i][key]
            assert np.array_equal(x, y) and x.dtype == y.dtype


def test_optimizer_from_nanogpt_names_what_does_not_fit():
    model = make_model()
    with pytest.warns(InterchangeWarning, match="did not decay"):
        good = interchange.optimizer_to_nanogpt(train_a_little(model).state_dict(), model.config, [])
    wrong_groups = {**good, "param_groups": [good["param_groups"][0]]}
    with pytest.raises(InterchangeError, match=r"hold \[\d+\] parameters; nanoGPT's configure_optimizers makes"):
        interchange.optimizer_from_nanogpt(wrong_groups, model.config, [])
    bad_shape = {**good, "state": {**good["state"], 0: {**good["state"][0], "exp_avg": np.zeros(3)}}}
    with pytest.raises(InterchangeError, match=r"transformer.wte.weight: exp_avg has shape \(3,\)"):
        interchange.optimizer_from_nanogpt(bad_shape, model.config, [])
    bad_step = {**good, "state": {**good["state"], 1: {**good["state"][1], "step": 2.5}}}
    with pytest.raises(InterchangeError, match="transformer.wpe.weight: step must be one whole number"):
        interchange.optimizer_from_nanogpt(bad_step, model.config, [])


def test_an_sgd_or_missing_optimizer_exports_no_moments_with_a_note():
    model = make_model()
    sgd = optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    notes = []
    with pytest.warns(InterchangeWarning, match="SGD"):
        assert interchange.optimizer_to_nanogpt(sgd.state_dict(), model.config, notes) is None
    with pytest.warns(InterchangeWarning, match="no optimizer state"):
        assert interchange.optimizer_to_nanogpt(None, model.config, notes) is None
    assert len(notes) == 2


# ----------------------------------------------------------------------------------------------------
# 4. safetensors
# ----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_safetensors_round_trip_is_bit_exact(tmp_path, dtype):
    rng = np.random.default_rng(0)
    special = np.array([0.0, -0.0, np.inf, -np.inf, np.finfo(dtype).tiny / 4, np.finfo(dtype).max], dtype=dtype)
    tensors = {"a": rng.standard_normal((3, 5)).astype(dtype), "b.weight": special, "scalar": np.array(2.5, dtype),
               "empty": np.zeros((0, 4), dtype), "ids": np.arange(7, dtype=np.int64)}
    path = str(tmp_path / "t.safetensors")
    interchange.write_safetensors(path, tensors, {"note": "hello", "config": json.dumps({"n": 1})})
    got, metadata, dtypes = interchange.read_safetensors(path)
    assert metadata == {"note": "hello", "config": '{"n": 1}'} and list(got) == list(tensors)
    for name, array in tensors.items():
        assert got[name].dtype == array.dtype and got[name].shape == array.shape
        assert got[name].tobytes() == array.tobytes(), name  # the same bits, -0.0 and subnormals included
    assert dtypes["a"] == ("F32" if dtype == np.float32 else "F64") and dtypes["ids"] == "I64"
    raw = open(path, "rb").read()
    assert (8 + int.from_bytes(raw[:8], "little")) % 8 == 0  # data starts 8-byte aligned
    big_endian = {"x": np.arange(4, dtype=">f4")}  # stored little-endian whatever the array's byte order
    interchange.write_safetensors(path, big_endian)
    assert np.array_equal(interchange.read_safetensors(path)[0]["x"], [0, 1, 2, 3])


def hand_written_safetensors(entries, data, metadata=None):
    """A safetensors file built here from the format's description (not by write_safetensors)."""
    header = dict(entries)
    if metadata is not None:
        header["__metadata__"] = metadata
    text = json.dumps(header).encode()
    return struct.pack("<Q", len(text)) + text + data


def test_reader_reads_a_file_written_by_hand_including_bf16(tmp_path):
    data = struct.pack("<3f", 1.5, -2.0, 0.25) + struct.pack("<2H", 0x3F80, 0xC049) + struct.pack("<h", -7)
    blob = hand_written_safetensors({
        "w": {"dtype": "F32", "shape": [3], "data_offsets": [0, 12]},
        "h": {"dtype": "BF16", "shape": [2, 1], "data_offsets": [12, 16]},
        "i": {"dtype": "I16", "shape": [], "data_offsets": [16, 18]}}, data, {"k": "v"})
    path = tmp_path / "hand.safetensors"
    path.write_bytes(blob)
    tensors, metadata, dtypes = interchange.read_safetensors(str(path))
    np.testing.assert_array_equal(tensors["w"], [1.5, -2.0, 0.25])
    np.testing.assert_array_equal(tensors["h"], [[1.0], [-3.140625]])  # bfloat16 widened exactly
    assert tensors["h"].dtype == np.float32 and dtypes["h"] == "BF16"
    assert tensors["i"] == -7 and tensors["i"].shape == () and metadata == {"k": "v"}


F32_ENTRY = {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}
DUPLICATE = ('{"w": %s, "w": %s}' % (json.dumps(F32_ENTRY), json.dumps(F32_ENTRY))).encode()  # JSON allows it
DAMAGES = {  # name: (file bytes, what the error must say)
    "empty file": (b"", "shorter than the 8-byte header length"),
    "header longer than file": (struct.pack("<Q", 1000) + b"{}", "truncated"),
    "huge header length": (struct.pack("<Q", 2 ** 60) + b"{}", "truncated"),
    "header not json": (struct.pack("<Q", 5) + b"{abc}", "not UTF-8 JSON"),
    "header not utf-8": (struct.pack("<Q", 3) + b"{\xff}", "not UTF-8 JSON"),
    "header a list": (struct.pack("<Q", 2) + b"[]", "must be a JSON object"),
    "duplicate name": (struct.pack("<Q", len(DUPLICATE)) + DUPLICATE + bytes(8), "appear twice"),
    "unknown dtype": (hand_written_safetensors({"w": {**F32_ENTRY, "dtype": "F31"}}, bytes(8)), "unknown dtype 'F31'"),
    "lowercase dtype": (hand_written_safetensors({"w": {**F32_ENTRY, "dtype": "f32"}}, bytes(8)), "unknown dtype"),
    "missing offsets": (hand_written_safetensors({"w": {"dtype": "F32", "shape": [2]}}, bytes(8)),
                        "expected exactly dtype, shape and data_offsets"),
    "negative shape": (hand_written_safetensors({"w": {**F32_ENTRY, "shape": [-2]}}, bytes(8)), "shape must be"),
    "float shape": (hand_written_safetensors({"w": {**F32_ENTRY, "shape": [2.0]}}, bytes(8)), "shape must be"),
    "offsets reversed": (hand_written_safetensors({"w": {**F32_ENTRY, "data_offsets": [8, 0]}}, bytes(8)),
                         "0 <= begin <= end"),
    "offsets out of range": (hand_written_safetensors({"w": {**F32_ENTRY, "data_offsets": [8, 16]}}, bytes(8)),
                             "run past the end of the data"),
    "data truncated": (hand_written_safetensors({"w": F32_ENTRY}, bytes(5)), "run past the end of the data"),
    "size does not fit shape": (hand_written_safetensors({"w": {**F32_ENTRY, "shape": [3]}}, bytes(8)),
                                r"8 bytes for shape \[3\] of F32, which needs 12"),
    "overlapping tensors": (hand_written_safetensors({"a": F32_ENTRY, "b": {**F32_ENTRY, "data_offsets": [4, 12]}},
                                                     bytes(12)), "overlaps the tensor before it"),
    "gap between tensors": (hand_written_safetensors({"a": F32_ENTRY, "b": {**F32_ENTRY, "data_offsets": [12, 20]}},
                                                     bytes(20)), "leaves a gap of 4 bytes"),
    "trailing bytes": (hand_written_safetensors({"w": F32_ENTRY}, bytes(12)), "4 bytes after the last tensor"),
    "metadata not strings": (hand_written_safetensors({"w": F32_ENTRY}, bytes(8), {"n": 1}), "strings to strings"),
}


@pytest.mark.parametrize("damage", list(DAMAGES))
def test_damaged_safetensors_files_are_refused_naming_the_problem(tmp_path, damage):
    blob, message = DAMAGES[damage]
    path = tmp_path / "bad.safetensors"
    path.write_bytes(blob)
    with pytest.raises(SafetensorsError, match=message) as err:
        interchange.read_safetensors(str(path))
    assert str(path) in str(err.value)


def test_cutting_a_good_file_anywhere_is_refused(tmp_path):
    path = str(tmp_path / "good.safetensors")
    interchange.write_safetensors(path, {"a": np.ones((2, 3), np.float32), "b": np.arange(5.0)})
    blob = open(path, "rb").read()
    for cut in range(len(blob)):
        (tmp_path / "cut.safetensors").write_bytes(blob[:cut])
        with pytest.raises(SafetensorsError):
            interchange.read_safetensors(str(tmp_path / "cut.safetensors"))


def test_writer_refuses_what_safetensors_cannot_hold(tmp_path):
    path = str(tmp_path / "x.safetensors")
    with pytest.raises(SafetensorsError, match="has dtype complex128"):
        interchange.write_safetensors(path, {"c": np.zeros(2, complex)})
    with pytest.raises(SafetensorsError, match="metadata must map strings to strings"):
        interchange.write_safetensors(path, {"a": np.zeros(2)}, {"n": 1})
    assert not os.path.exists(path) and os.listdir(tmp_path) == []  # nothing half-written


# ----------------------------------------------------------------------------------------------------
# 5. files
# ----------------------------------------------------------------------------------------------------


def test_safetensors_export_then_import_gives_back_the_same_checkpoint(saved, tmp_path):
    path, model, _ = saved
    out = str(tmp_path / "model.safetensors")
    summary = export.export_safetensors(path, out)
    tensors, metadata, _ = interchange.read_safetensors(out)
    assert "lm_head.weight" not in tensors and len(tensors) == len(model.state_dict()) - 1  # the tie stored once
    assert metadata["format"] == "pt" and json.loads(metadata["model_args"])["n_head"] == 2
    assert metadata["gelu"] == "exact" and summary["notes"] == []

    result = export.import_checkpoint(out, str(tmp_path / "back"))
    back = checkpoint.load(result["checkpoint"])
    original = checkpoint.load(path)
    assert back.config == original.config and back.meta["tokenizer"] == original.meta["tokenizer"]
    assert back.meta["step"] == 3
    for name, array in original.model_state.items():
        assert back.model_state[name].dtype == array.dtype and np.array_equal(back.model_state[name], array), name
    rebuilt = checkpoint.load_model(result["checkpoint"])  # what finetune --from does, with its tokenizer check
    assert tokenizer_from_dict(back.meta["tokenizer"]).vocab_size == rebuilt.config.vocab_size
    idx = np.array([[1, 2, 3, 4]])
    assert np.array_equal(rebuilt(idx)[0].data, model(idx)[0].data)


def test_exporting_a_tanh_model_warns_that_nanogpt_logits_will_differ(tmp_path):
    path = str(tmp_path / "tanh.npz")
    checkpoint.save(path, make_model(gelu="tanh"))
    with pytest.warns(InterchangeWarning, match="logits will differ"):
        summary = export.export_safetensors(path, str(tmp_path / "tanh.safetensors"))
    assert any("tanh GELU" in note for note in summary["notes"])


def write_nanogpt_style(tmp_path, model, itos, dtype_bits=None):
    """A safetensors file as a nanoGPT user would make it (model_args only) and nanoGPT's meta.pkl beside it."""
    tensors = {k: v for k, v in model.state_dict().items() if k != "lm_head.weight"}
    path = str(tmp_path / "nano.safetensors")
    interchange.write_safetensors(path, tensors, {"model_args": json.dumps(interchange.model_args_from_config(
        model.config))})
    with open(tmp_path / "meta.pkl", "wb") as f:
        pickle.dump({"vocab_size": len(itos), "itos": itos, "stoi": {c: i for i, c in itos.items()}}, f)
    return path


def test_a_nanogpt_vocabulary_without_unk_shifts_ids_and_keeps_every_logit(tmp_path):
    chars = sorted(set(TEXT))
    nano = make_model(seed=3, vocab_size=len(chars))  # stands for a model trained in nanoGPT: ids 0..V-1 = chars
    path = write_nanogpt_style(tmp_path, nano, dict(enumerate(chars)))
    with pytest.warns(InterchangeWarning, match="no <unk>"):
        result = export.import_checkpoint(path, str(tmp_path / "out"))
    assert result["config"]["gelu"] == "exact" and result["config"]["vocab_size"] == len(chars) + 1
    model = checkpoint.load_model(result["checkpoint"])
    tokenizer = tokenizer_from_dict(checkpoint.load(result["checkpoint"]).meta["tokenizer"])
    ids = np.array([[chars.index(c) for c in "the fox"]])
    assert np.array_equal(tokenizer.encode("the fox"), ids[0] + 1)  # every id moved up by one
    nano_exact = GPT(GPTConfig(**{**nano.config.to_dict(), "gelu": "exact"}))  # nanoGPT runs the exact GELU
    nano_exact.load_state_dict(nano.state_dict())
    want = nano_exact(ids)[0].data  # (1, T, V)
    got = model(ids + 1)[0].data
    np.testing.assert_allclose(got[..., 1:], want, rtol=1e-6, atol=1e-6)
    assert np.all(got[..., 0] == 0)  # <unk>'s row is zero, so its logit is 0 everywhere


def test_meta_pkl_with_a_class_inside_is_refused_without_running_it(tmp_path):
    marker = tmp_path / "ran"

    class Evil:
        def __reduce__(self):
            return (open, (str(marker), "w"))  # unpickling would create the marker file

    with open(tmp_path / "meta.pkl", "wb") as f:
        pickle.dump({"vocab_size": 1, "itos": {0: "a"}, "stoi": {"a": 0}, "x": Evil()}, f)
    with pytest.raises(InterchangeError, match="refers to .*open"):
        export.read_meta_pkl(str(tmp_path / "meta.pkl"))
    assert not marker.exists()


@pytest.mark.parametrize("meta, message", [
    ({"vocab_size": 2, "itos": {0: "a", 1: "bc"}, "stoi": {}}, "not one character"),
    ({"vocab_size": 3, "itos": {0: "a", 1: "b"}, "stoi": {}}, "every id 0..vocab_size-1"),
    ({"vocab_size": 2, "itos": {0: "a", 2: "b"}, "stoi": {}}, "every id 0..vocab_size-1"),
    ({"vocab_size": 2, "itos": {0: "a", 1: "a"}, "stoi": {}}, "a character twice"),
    ({"itos": [], "stoi": {}}, "a dict with 'itos'"),
    ({"vocab_size": 1, "itos": {0: "a"}, "stoi": {"a": 0}, "f": 1.5}, "holds a float"),
])
def test_meta_pkl_that_is_not_a_character_vocabulary_is_refused(tmp_path, meta, message):
    with open(tmp_path / "meta.pkl", "wb") as f:
        pickle.dump(meta, f)
    with pytest.raises(InterchangeError, match=message):
        export.read_meta_pkl(str(tmp_path / "meta.pkl"))


def test_import_without_a_vocabulary_asks_for_one_and_writes_nothing(tmp_path):
    model = make_model()
    path = str(tmp_path / "w.safetensors")
    interchange.write_safetensors(path, {k: v for k, v in model.state_dict().items() if k != "lm_head.weight"})
    with pytest.raises(InterchangeError, match="pass n_head"):
        export.import_checkpoint(path, str(tmp_path / "out"))
    with pytest.raises(InterchangeError, match="no vocabulary found .* pass vocab=PATH"):
        export.import_checkpoint(path, str(tmp_path / "out"), n_head=2)
    assert not os.path.exists(tmp_path / "out")
    vocab = str(tmp_path / "tok.json")
    with open(vocab, "w") as f:
        json.dump(CharTokenizer.build(TEXT).to_dict(), f)
    result = export.import_checkpoint(path, str(tmp_path / "out"), n_head=2, vocab=vocab, gelu="tanh")
    assert result["config"] == model.config.to_dict()


def test_bad_arguments_are_refused_before_anything_is_written(saved, tmp_path):
    path, _, _ = saved
    st = str(tmp_path / "m.safetensors")
    export.export_safetensors(path, st)
    before = sorted(os.listdir(tmp_path))
    cases = [
        (lambda: export.export_safetensors(str(tmp_path / "nope.npz"), st + "2"), "no such file"),
        (lambda: export.export_safetensors(path, path, overwrite=True), "is the input file"),
        (lambda: export.export_safetensors(path, st), "already exists"),
        (lambda: export.export_safetensors(path, str(tmp_path)), "is a folder"),
        (lambda: export.export_safetensors(path, str(tmp_path / "no" / "x.safetensors")), "does not exist"),
        (lambda: export.export_safetensors(st, st + "2"), "cannot export"),  # not a tinyft checkpoint
        (lambda: export.import_checkpoint(path, str(tmp_path / "o")), "already a tinyft checkpoint"),
        (lambda: export.import_checkpoint(st, str(tmp_path / "o"), gelu="none"), "gelu must be None or one of"),
        (lambda: export.import_checkpoint(st, str(tmp_path / "o"), n_head=0), "n_head must be None"),
        (lambda: export.import_checkpoint(st, path), "is a file, not a folder"),
        (lambda: export.export_nanogpt(path, str(tmp_path / "o"), dataset="../x"), "plain folder name"),
    ]
    for call, message in cases:
        with pytest.raises(InterchangeError, match=message):
            call()
    assert sorted(os.listdir(tmp_path)) == before


def test_import_never_writes_over_an_existing_checkpoint_unless_asked(saved, tmp_path):
    path, _, _ = saved
    st = str(tmp_path / "m.safetensors")
    export.export_safetensors(path, st)
    out = tmp_path / "out"
    export.import_checkpoint(st, str(out))
    stamp = (out / "ckpt.npz").read_bytes()
    with pytest.raises(InterchangeError, match="already exists"):
        export.import_checkpoint(st, str(out))
    assert (out / "ckpt.npz").read_bytes() == stamp
    export.import_checkpoint(st, str(out), overwrite=True)


def test_export_nanogpt_without_torch_says_how_to_install_it(saved, tmp_path, monkeypatch):
    import sys

    fake_pt = tmp_path / "ckpt.pt"
    fake_pt.write_bytes(b"PK\x03\x04 a torch.save zip would start like this")
    monkeypatch.setitem(sys.modules, "torch", None)  # "import torch" now raises ImportError
    with pytest.raises(InterchangeError, match="needs PyTorch.*pip install torch"):
        export.export_nanogpt(saved[0], str(tmp_path / "nano"))
    with pytest.raises(InterchangeError, match="needs PyTorch.*pip install torch"):
        export.import_checkpoint(fake_pt, str(tmp_path / "o"))
    assert not os.path.exists(tmp_path / "nano") and not os.path.exists(tmp_path / "o")


# ----------------------------------------------------------------------------------------------------
# 6. the safetensors package (an optional dev extra) reads our files and we read its files
# ----------------------------------------------------------------------------------------------------


def test_the_safetensors_package_reads_our_file_and_we_read_its_file_bit_exactly(saved, tmp_path):
    st = pytest.importorskip("safetensors.numpy", reason="the safetensors package is not installed "
                                                         "(pip install safetensors, or the dev extra)")
    path, model, _ = saved
    ours = str(tmp_path / "ours.safetensors")
    export.export_safetensors(path, ours)
    loaded = st.load_file(ours)
    for name, array in model.state_dict().items():
        if name != "lm_head.weight":
            assert loaded[name].dtype == np.float32 and loaded[name].tobytes() == array.tobytes(), name
    rng = np.random.default_rng(5)
    theirs_tensors = {"f64": rng.standard_normal((4, 3)), "f32": rng.standard_normal(7).astype(np.float32),
                      "f16": rng.standard_normal(5).astype(np.float16),
                      "i32": np.arange(6, dtype=np.int32).reshape(2, 3)}
    theirs = str(tmp_path / "theirs.safetensors")
    st.save_file(theirs_tensors, theirs, metadata={"format": "np"})
    got, metadata, _ = interchange.read_safetensors(theirs)
    assert metadata == {"format": "np"}
    for name, array in theirs_tensors.items():
        assert got[name].dtype == array.dtype and got[name].tobytes() == array.tobytes(), name


# ----------------------------------------------------------------------------------------------------
# 7. PyTorch: the nanoGPT ckpt.pt round trip
# ----------------------------------------------------------------------------------------------------


def test_nanogpt_export_then_import_round_trips_weights_moments_and_vocabulary(saved, tmp_path):
    torch = pytest.importorskip("torch", reason="PyTorch is not installed; export/import of ckpt.pt needs it")
    path, model, optimizer = saved
    with pytest.warns(InterchangeWarning, match="did not decay"):  # nanoGPT decays embeddings, tinyft does not
        summary = export.export_nanogpt(path, str(tmp_path / "out"))
    assert "--block_size=8" in summary["nanogpt_flags"] and summary["iter_num"] == 3
    ckpt = torch.load(str(tmp_path / "out" / "ckpt.pt"), map_location="cpu", weights_only=True)
    assert set(ckpt) == {"model", "optimizer", "model_args", "iter_num", "best_val_loss", "config"}
    assert ckpt["best_val_loss"] == 2.25 and ckpt["config"]["dataset"] == "tinyft"
    assert ckpt["model"]["lm_head.weight"].data_ptr() == ckpt["model"]["transformer.wte.weight"].data_ptr()
    with open(tmp_path / "out" / "meta.pkl", "rb") as f:
        meta = pickle.load(f)  # our own file, just written
    assert meta["itos"][0] == "\ufffd" and "".join(meta["itos"][i] for i in range(1, meta["vocab_size"])) == \
        "".join(CharTokenizer.build(TEXT).chars)

    result = export.import_checkpoint(str(tmp_path / "out" / "ckpt.pt"), str(tmp_path / "back"))
    a, b = checkpoint.load(path), checkpoint.load(result["checkpoint"])
    assert a.config == b.config and a.meta["tokenizer"] == b.meta["tokenizer"] and b.meta["step"] == 3
    for name in a.model_state:
        assert np.array_equal(a.model_state[name], b.model_state[name]), name
    for i in a.optimizer_state["state"]:
        for key in ("step", "m", "v"):
            assert np.array_equal(a.optimizer_state["state"][i][key], b.optimizer_state["state"][i][key])


def test_import_of_a_compiled_bf16_checkpoint_strips_casts_and_notes(saved, tmp_path):
    torch = pytest.importorskip("torch", reason="PyTorch is not installed; reading ckpt.pt needs it")
    path, model, _ = saved
    state = {"_orig_mod." + k: torch.from_numpy(v.copy()).to(torch.bfloat16) for k, v in model.state_dict().items()}
    state["_orig_mod.transformer.h.0.attn.bias"] = torch.tril(torch.ones(1, 1, 8, 8))
    folder = tmp_path / "nano"
    folder.mkdir()
    torch.save({"model": state, "model_args": interchange.model_args_from_config(model.config), "iter_num": 7},
               str(folder / "ckpt.pt"))
    with open(folder / "meta.pkl", "wb") as f:
        pickle.dump(export.char_vocabulary(CharTokenizer.build(TEXT).to_dict()), f)
    with pytest.warns(InterchangeWarning, match="bfloat16 arrays .* cast to float32 exactly"):
        result = export.import_checkpoint(str(folder / "ckpt.pt"), str(tmp_path / "back"))
    assert any("_orig_mod." in n for n in result["notes"]) and any("buffers" in n for n in result["notes"])
    back = checkpoint.load(result["checkpoint"]).model_state
    for name, array in model.state_dict().items():
        want = interchange.bfloat16_bits_to_float32(interchange.float32_to_bfloat16_bits(array))
        assert np.array_equal(back[name], want), name
