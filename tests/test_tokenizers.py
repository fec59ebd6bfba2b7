"""Tests for tinyft/tokenizers.py: round trips (property-based), BPE merges by hand, saving, errors."""

import json

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tinyft.tokenizers import (
    UNKNOWN_CHAR,
    BPETokenizer,
    CharTokenizer,
    tokenizer_from_dict,
)

ALPHABET = "abcdefghij XYZ.,\n"
CHAR_TOKENIZER = CharTokenizer.build([ALPHABET[:9], ALPHABET[9:]])  # one vocabulary over two texts
BPE_TRAINING_TEXT = ("the cat sat on the mat; thé café 東京 ünïcödé 123 + 456 = 579\n" * 20
                     + "def f(x):\n    return x_1 + x_2\n" * 20)
BPE_TOKENIZER = BPETokenizer.train(BPE_TRAINING_TEXT, vocab_size=300)


# ---- CharTokenizer


def test_char_vocabulary_is_shared_over_all_texts_with_unk_at_zero():
    assert CHAR_TOKENIZER.vocab_size == len(set(ALPHABET)) + 1
    assert CHAR_TOKENIZER.chars == sorted(set(ALPHABET))
    assert CHAR_TOKENIZER.unk_id == 0


@settings(max_examples=200, deadline=None)
@given(st.text(alphabet=ALPHABET))
def test_char_round_trip_is_exact_for_text_of_its_alphabet(text):
    ids = CHAR_TOKENIZER.encode(text)
    assert ids.dtype == np.int64 and ids.shape == (len(text),)
    assert CHAR_TOKENIZER.decode(ids) == text


@settings(max_examples=200, deadline=None)
@given(st.text())
def test_char_round_trip_replaces_unknown_characters_by_replacement_char(text):
    expected = "".join(ch if ch in CHAR_TOKENIZER.char_to_id else UNKNOWN_CHAR for ch in text)
    assert CHAR_TOKENIZER.decode(CHAR_TOKENIZER.encode(text)) == expected


def test_char_unknown_character_encodes_to_unk_and_decodes_to_replacement_char():
    assert CHAR_TOKENIZER.encode("a€").tolist() == [CHAR_TOKENIZER.char_to_id["a"], 0]
    assert CHAR_TOKENIZER.decode([0]) == "\ufffd"


def test_char_min_count_drops_rare_characters():
    tokenizer = CharTokenizer.build("aaab", min_count=2)
    assert tokenizer.chars == ["a"]


def test_char_to_dict_from_dict_round_trips_through_json():
    d = json.loads(json.dumps(CHAR_TOKENIZER.to_dict()))
    assert d["type"] == "char"
    rebuilt = tokenizer_from_dict(d)
    assert isinstance(rebuilt, CharTokenizer)
    assert rebuilt.chars == CHAR_TOKENIZER.chars
    assert rebuilt.encode("abc XYZ").tolist() == CHAR_TOKENIZER.encode("abc XYZ").tolist()


@pytest.mark.parametrize("bad, match", [
    ({"type": "char", "chars": ["a", "a"]}, "twice"),
    ({"type": "char", "chars": ["ab"]}, r'd\["chars"\]\[0\]'),
    ({"type": "char", "chars": "abc"}, r'd\["chars"\]'),
    ({"type": "bpe", "chars": ["a"]}, "char"),
])
def test_char_from_dict_rejects_bad_input_naming_the_entry(bad, match):
    with pytest.raises(ValueError, match=match):
        CharTokenizer.from_dict(bad)


def test_char_decode_rejects_ids_outside_vocabulary():
    with pytest.raises(ValueError, match="ids holds"):
        CHAR_TOKENIZER.decode([CHAR_TOKENIZER.vocab_size])
    with pytest.raises(ValueError, match="ids holds"):
        CHAR_TOKENIZER.decode([-1])


def test_char_build_rejects_empty_text_and_bad_min_count():
    with pytest.raises(ValueError, match="min_count"):
        CharTokenizer.build("")
    with pytest.raises(ValueError, match="min_count"):
        CharTokenizer.build("abc", min_count=0)


# ---- BPETokenizer


def test_bpe_merges_on_aaabdaaabac_match_hand_computation():
    # Bytes: a=97 b=98 c=99 d=100. Pair counts in "aaabdaaabac": aa 4, ab 2, others 1.
    #   merge 1: (a, a) -> 256   text: [256] a b d [256] a b a c
    #   merge 2: (256, a) and (a, b) both occur twice; the tie goes to the lower pair (97, 98) -> 257
    #            text: [256][257] d [256][257] a c
    #   merge 3: (256, 257) occurs twice -> 258      text: [258] d [258] a c
    #   merge 4: every pair occurs once; the lowest is (97, 99) -> 259
    tokenizer = BPETokenizer.train("aaabdaaabac", vocab_size=260)
    assert tokenizer.merges == [((97, 97), 256), ((97, 98), 257), ((256, 257), 258), ((97, 99), 259)]
    assert [tokenizer.token_bytes(i) for i in range(256, 260)] == [b"aa", b"ab", b"aaab", b"ac"]
    assert tokenizer.encode("aaabdaaabac").tolist() == [258, 100, 258, 259]


def test_bpe_training_stops_early_when_no_pair_is_left():
    tokenizer = BPETokenizer.train("ab", vocab_size=1000)
    assert tokenizer.merges == [((97, 98), 256)]
    assert tokenizer.vocab_size == 257


def test_bpe_vocab_size_256_means_plain_bytes():
    tokenizer = BPETokenizer.train("héllo", vocab_size=256)
    assert tokenizer.encode("héllo").tolist() == list("héllo".encode("utf-8"))


@settings(max_examples=300, deadline=None)
@given(st.text())
def test_bpe_round_trip_is_exact_for_any_unicode_text(text):
    ids = BPE_TOKENIZER.encode(text)
    assert ids.dtype == np.int64
    assert BPE_TOKENIZER.decode(ids) == text


def test_bpe_compresses_the_text_it_was_trained_on():
    ids = BPE_TOKENIZER.encode(BPE_TRAINING_TEXT)
    assert len(ids) < 0.5 * len(BPE_TRAINING_TEXT.encode("utf-8"))


def test_bpe_decode_of_a_split_utf8_character_gives_replacement_char():
    first_byte_of_e_acute = "é".encode("utf-8")[0]
    assert BPE_TOKENIZER.decode([first_byte_of_e_acute]) == "\ufffd"


def test_bpe_to_dict_from_dict_round_trips_through_json():
    d = json.loads(json.dumps(BPE_TOKENIZER.to_dict()))
    rebuilt = tokenizer_from_dict(d)
    assert isinstance(rebuilt, BPETokenizer)
    assert rebuilt.merges == BPE_TOKENIZER.merges
    assert rebuilt.encode(BPE_TRAINING_TEXT).tolist() == BPE_TOKENIZER.encode(BPE_TRAINING_TEXT).tolist()


def test_bpe_train_rejects_vocab_size_below_256():
    with pytest.raises(ValueError, match="vocab_size"):
        BPETokenizer.train("abc", vocab_size=255)


def test_bpe_decode_and_token_bytes_reject_ids_outside_vocabulary():
    with pytest.raises(ValueError, match="ids holds"):
        BPE_TOKENIZER.decode([BPE_TOKENIZER.vocab_size])
    with pytest.raises(ValueError, match="token_id"):
        BPE_TOKENIZER.token_bytes(BPE_TOKENIZER.vocab_size)


@pytest.mark.parametrize("merges, match", [
    ([[97, 98, 300]], "expected new_id 256"),
    ([[97, 256, 256]], "older ids"),
    ([[97, 98]], "three ints"),
])
def test_bpe_from_dict_rejects_bad_merges_naming_the_entry(merges, match):
    with pytest.raises(ValueError, match=match):
        BPETokenizer.from_dict({"type": "bpe", "merges": merges})


def test_tokenizer_from_dict_rejects_unknown_type():
    with pytest.raises(ValueError, match="type"):
        tokenizer_from_dict({"type": "wordpiece"})
