"""Tests for tinyft/data.py: offline corpora, held-out docs, text loading, downloads, splits, batches."""

import hashlib
import io
import math
import urllib.error

import numpy as np
import pytest

from tinyft import data

# ---- corpora


def test_broad_corpus_is_deterministic_about_one_megabyte_and_cached():
    text = data.broad_corpus()
    assert 900_000 < len(text) < 1_300_000
    data._CACHE.pop("broad")
    rebuilt = data.broad_corpus()
    assert rebuilt == text
    assert data.broad_corpus() is rebuilt  # cached


def test_broad_corpus_is_english_prose():
    text = data.broad_corpus()
    ascii_letters_and_spaces = sum(ch.isascii() and (ch.isalpha() or ch == " ") for ch in text)
    assert ascii_letters_and_spaces / len(text) > 0.8
    for word in (" the ", " of ", " is ", " and "):
        assert text.count(word) > 1000
    assert "\n\n\n" not in text and " \n" not in text  # docs separated by one blank line, no trailing spaces


def test_broad_corpus_excludes_held_out_docstrings():
    text = data.broad_corpus()
    names = dict(data.held_out_docs())
    assert names["statistics.median_grouped"].startswith("Estimates the median for numeric data binned")
    for name in ("statistics.median_grouped", "difflib.get_close_matches", "heapq.nsmallest"):
        assert names[name] not in text
    distinctive = [line for _, line in data.held_out_docs() if len(line) > 30]
    assert len(distinctive) > 50
    assert [line for line in distinctive if line in text] == []


def test_live_broad_corpus_of_this_python_also_excludes_its_held_out_docstrings():
    """The live build (this interpreter's docstrings, whatever its version) keeps the same rule."""
    text = data.broad_corpus(live=True)
    assert 900_000 < len(text) < 1_300_000
    distinctive = [line for _, line in data.held_out_docs(live=True) if len(line) > 30]
    assert len(distinctive) > 50
    assert [line for line in distinctive if line in text] == []


def test_held_out_docs_are_deterministic_pairs_from_held_out_modules():
    pairs = data.held_out_docs()
    assert pairs == data.held_out_docs()
    assert len(pairs) > 100
    for name, line in pairs:
        assert name.split(".")[0] in data.HELD_OUT_MODULES
        assert line and "\n" not in line
    assert not set(data.HELD_OUT_MODULES) & set(data.BROAD_DOC_MODULES)
    assert not set(data.HELD_OUT_MODULES) & set(data.CODE_MODULES + data.SHIFTED_CODE_MODULES)


def test_domain_corpus_is_code_and_differs_from_broad_prose():
    broad, code = data.broad_corpus(), data.domain_corpus("stdlib_code")
    assert 150_000 < len(code) < 400_000
    per_1000 = lambda text, s: 1000 * text.count(s) / len(text)
    assert per_1000(code, "def ") > 10 * per_1000(broad, "def ")
    assert per_1000(code, "    ") > 3 * per_1000(broad, "    ")
    p, q = _char_distribution(broad), _char_distribution(code)
    total_variation = 0.5 * sum(abs(p.get(ch, 0) - q.get(ch, 0)) for ch in set(p) | set(q))
    assert total_variation > 0.1


def _char_distribution(text):
    counts = {}
    for ch in text:
        counts[ch] = counts.get(ch, 0) + 1
    return {ch: n / len(text) for ch, n in counts.items()}


def test_shifted_modules_are_not_in_default_code_corpus():
    default = data.domain_modules("stdlib_code")
    shifted = data.domain_modules("stdlib_code_shifted")
    assert set(default) <= set(data.CODE_MODULES) and set(shifted) <= set(data.SHIFTED_CODE_MODULES)
    assert not set(default) & set(shifted)
    code = data.domain_corpus("stdlib_code")
    for source in shifted.values():
        assert source not in code
    assert data.domain_corpus("stdlib_code_shifted") == "\n\n".join(shifted.values()) + "\n"


def test_unknown_corpus_and_domain_names_list_the_valid_ones():
    with pytest.raises(ValueError, match="stdlib_code_shifted"):
        data.domain_corpus("poetry")
    with pytest.raises(ValueError, match="broad"):
        data.load_corpus("poetry")


def test_load_corpus_serves_every_offline_name():
    assert data.load_corpus() == data.broad_corpus()
    assert data.load_corpus("broad-live") == data.broad_corpus(live=True)
    assert data.load_corpus("stdlib_code-live") == data.domain_corpus("stdlib_code", live=True)
    assert data.load_corpus("stdlib_code") == data.domain_corpus("stdlib_code")
    assert data.load_corpus("stdlib_code_shifted") == data.domain_corpus("stdlib_code_shifted")


# ---- load_text


def test_load_text_reads_a_file_and_a_folder_sorted(tmp_path):
    (tmp_path / "b.txt").write_text("second\n", encoding="utf-8")
    (tmp_path / "a.md").write_text("first\r\n", encoding="utf-8")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "c.py").write_text("third = 3\n", encoding="utf-8")
    (tmp_path / "skip.bin").write_bytes(b"\x00\x01")
    (tmp_path / "empty.txt").write_text("", encoding="utf-8")
    assert data.load_text(tmp_path / "b.txt") == "second\n"
    assert data.load_text(tmp_path) == "first\n\nsecond\n\nthird = 3\n"
    assert data.load_text(str(tmp_path)) == data.load_text(tmp_path)


def test_load_text_errors_name_the_file(tmp_path):
    with pytest.raises(ValueError, match="no file or folder"):
        data.load_text(tmp_path / "missing.txt")
    with pytest.raises(ValueError, match="looks like text"):
        data.load_text("line one\nline two")
    (tmp_path / "empty.txt").write_text("", encoding="utf-8")
    with pytest.raises(ValueError, match="empty.txt is empty"):
        data.load_text(tmp_path / "empty.txt")
    (tmp_path / "nul.txt").write_bytes(b"abc\x00def")
    with pytest.raises(ValueError, match="nul.txt looks binary"):
        data.load_text(tmp_path / "nul.txt")
    (tmp_path / "latin1.txt").write_bytes("café".encode("latin-1"))
    with pytest.raises(ValueError, match="latin1.txt is not UTF-8"):
        data.load_text(tmp_path / "latin1.txt")
    (tmp_path / "folder").mkdir()
    with pytest.raises(ValueError, match="holds no non-empty"):
        data.load_text(tmp_path / "folder")


# ---- download (never the network: a fake opener)

PAYLOAD = b"First Citizen:\nBefore we proceed any further, hear me speak.\n"


class FakeOpener:
    """Stands in for urllib.request.urlopen; counts calls; can fail like a machine offline."""

    def __init__(self, payload=PAYLOAD, offline=False):
        self.payload, self.offline, self.calls = payload, offline, 0

    def __call__(self, url, timeout=None):
        self.calls += 1
        if self.offline:
            raise urllib.error.URLError("[Errno -3] Temporary failure in name resolution")
        return io.BytesIO(self.payload)


@pytest.fixture
def fake_download(monkeypatch):
    url = "https://example.invalid/input.txt"
    monkeypatch.setitem(data.DOWNLOADS, "tiny", (url, hashlib.sha256(PAYLOAD).hexdigest()))


def test_download_fetches_once_then_uses_the_cache(tmp_path, fake_download):
    opener = FakeOpener()
    path = data.download("tiny", cache_dir=tmp_path, opener=opener)
    assert path.read_bytes() == PAYLOAD and path.parent == tmp_path
    again = data.download("tiny", cache_dir=tmp_path, opener=opener)
    assert again == path and opener.calls == 1
    assert [p.name for p in tmp_path.iterdir()] == [path.name]  # no temp files left behind


def test_download_uses_tinyft_cache_environment_variable(tmp_path, fake_download, monkeypatch):
    monkeypatch.setenv("TINYFT_CACHE", str(tmp_path / "cache"))
    path = data.download("tiny", opener=FakeOpener())
    assert path.parent == tmp_path / "cache"


def test_download_sha256_mismatch_raises_and_keeps_no_file(tmp_path, fake_download):
    with pytest.raises(ValueError, match="sha256"):
        data.download("tiny", cache_dir=tmp_path, opener=FakeOpener(payload=b"tampered"))
    assert list(tmp_path.iterdir()) == []


def test_download_offline_error_names_offline_alternatives(tmp_path, fake_download):
    with pytest.raises(data.OfflineError, match="offline alternatives") as error:
        data.download("tiny", cache_dir=tmp_path, opener=FakeOpener(offline=True))
    assert isinstance(error.value, ConnectionError)
    for name in ('"broad"', '"stdlib_code"', "load_text"):
        assert name in str(error.value)


def test_load_corpus_of_a_download_reads_the_cached_file(tmp_path, fake_download, monkeypatch):
    monkeypatch.setenv("TINYFT_CACHE", str(tmp_path))
    data.download("tiny", opener=FakeOpener())
    assert data.load_corpus("tiny") == PAYLOAD.decode("utf-8")


def test_download_rejects_unknown_name(tmp_path):
    with pytest.raises(ValueError, match="tinyshakespeare"):
        data.download("nope", cache_dir=tmp_path, opener=FakeOpener())


# ---- train_val_split and validation_overlap


def test_split_is_deterministic_disjoint_and_complete():
    ids = np.arange(10_000)
    train, val = data.train_val_split(ids, val_fraction=0.1, chunk_size=500, seed=0)
    again_train, again_val = data.train_val_split(ids, val_fraction=0.1, chunk_size=500, seed=0)
    assert np.array_equal(train, again_train) and np.array_equal(val, again_val)
    assert len(val) == 2 * 500 and len(train) + len(val) == len(ids)
    assert not set(train.tolist()) & set(val.tolist())
    other_train, other_val = data.train_val_split(ids, val_fraction=0.1, chunk_size=500, seed=1)
    assert not np.array_equal(val, other_val)


def test_split_keeps_chunks_contiguous():
    ids = np.arange(10_000)
    _, val = data.train_val_split(ids, chunk_size=1000, seed=3)
    for start in range(0, len(val), 1000):
        chunk = val[start:start + 1000]
        assert chunk[0] % 1000 == 0 and np.array_equal(chunk, np.arange(chunk[0], chunk[0] + 1000))


def test_split_default_chunk_size_adapts_to_a_short_text():
    train, val = data.train_val_split(np.arange(2_000))  # 20 chunks of 100 tokens
    assert len(val) == 2 * 100 and len(train) == 1_800
    train, val = data.train_val_split(np.arange(1_000_000))  # chunks of 4096 tokens
    assert len(val) == round(0.1 * (1_000_000 // 4096)) * 4096


def test_split_rejects_too_few_chunks_and_bad_fraction():
    with pytest.raises(ValueError, match="smaller chunk_size"):
        data.train_val_split(np.arange(100), chunk_size=4096)
    with pytest.raises(ValueError, match="val_fraction"):
        data.train_val_split(np.arange(10_000), val_fraction=1.5)


def test_overlap_is_one_when_val_is_copied_from_train():
    rng = np.random.default_rng(0)
    train = rng.integers(0, 50, size=20_000)
    val = train[3_000:5_000].copy()
    assert data.validation_overlap(train, val, window=32) == 1.0


def test_overlap_is_near_zero_for_independent_random_text():
    rng = np.random.default_rng(0)
    train = rng.integers(0, 50, size=200_000)
    val = rng.integers(0, 50, size=20_000)
    assert data.validation_overlap(train, val, window=32) < 0.01


def test_overlap_counts_a_partially_copied_val():
    rng = np.random.default_rng(1)
    train = rng.integers(0, 50, size=50_000)
    val = np.concatenate([train[:3_200], rng.integers(0, 50, size=3_200)])  # first half copied
    assert data.validation_overlap(train, val, window=32) == pytest.approx(0.5)


# ---- get_batch


def test_get_batch_shapes_dtypes_and_shift():
    ids = np.arange(1_000, dtype=np.int32)
    x, y = data.get_batch(ids, batch_size=4, block_size=8, rng=np.random.default_rng(0))
    assert x.shape == y.shape == (4, 8) and x.dtype == y.dtype == np.int64
    assert np.array_equal(x[:, 1:], y[:, :-1])
    assert np.array_equal(y, x + 1)  # ids are consecutive, so each target is the next id


def test_get_batch_same_seed_same_batch_other_seed_other_batch():
    ids = np.arange(10_000)
    x1, _ = data.get_batch(ids, 8, 16, np.random.default_rng(7))
    x2, _ = data.get_batch(ids, 8, 16, np.random.default_rng(7))
    x3, _ = data.get_batch(ids, 8, 16, np.random.default_rng(8))
    assert np.array_equal(x1, x2) and not np.array_equal(x1, x3)


def test_get_batch_with_exactly_block_size_plus_one_tokens_uses_the_only_window():
    x, y = data.get_batch(np.arange(9), 2, 8, np.random.default_rng(0))
    assert x.tolist() == [list(range(8))] * 2 and y.tolist() == [list(range(1, 9))] * 2


def test_get_batch_rejects_data_shorter_than_block_size_plus_one():
    with pytest.raises(ValueError, match="smaller block_size"):
        data.get_batch(np.arange(8), 2, 8, np.random.default_rng(0))


# ---- unigram baseline


def test_unigram_loss_equals_hand_computed_value():
    # train [0, 0, 1], vocab 3: p = (counts + 1) / (3 + 3) = [3/6, 2/6, 1/6]
    # val [0, 2]: loss = -(log(1/2) + log(1/6)) / 2
    loss = data.unigram_loss(np.array([0, 0, 1]), np.array([0, 2]), vocab_size=3)
    assert loss == pytest.approx(-(math.log(1 / 2) + math.log(1 / 6)) / 2)


def test_unigram_loss_rejects_ids_outside_vocab():
    with pytest.raises(ValueError, match="vocab_size"):
        data.unigram_loss(np.array([0, 5]), np.array([0]), vocab_size=3)
