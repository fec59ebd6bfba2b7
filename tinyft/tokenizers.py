"""tokenizers: text <-> integer ids, written from scratch.

Map of this file:
  CharTokenizer         one id per character of a shared vocabulary; id 0 is <unk>
  BPETokenizer          byte-level byte-pair encoding (the GPT-2 idea, kept simple): 256 byte ids,
                        then learned merges of the most frequent adjacent pair
  tokenizer_from_dict   rebuild either one from its to_dict() (a checkpoint stores it as JSON)
"""

import re
from collections import Counter

import numpy as np

UNKNOWN_CHAR = "\ufffd"  # what decode() writes for <unk>: the Unicode replacement character


def _check_decode_ids(ids, vocab_size):
    """ids as a 1-D int64 array, or ValueError naming the argument and the allowed range."""
    ids = np.asarray(ids)
    if ids.size == 0:
        return ids.astype(np.int64).reshape(-1)
    if ids.ndim != 1 or not np.issubdtype(ids.dtype, np.integer):
        raise ValueError(f"ids must be a 1-D sequence of integers, "
                         f"got shape {ids.shape} and dtype {ids.dtype}")
    if ids.min() < 0 or ids.max() >= vocab_size:
        bad = ids[(ids < 0) | (ids >= vocab_size)][0]
        raise ValueError(f"ids holds {bad}, outside the vocabulary 0..{vocab_size - 1}; "
                         f"were these ids made by another tokenizer?")
    return ids.astype(np.int64)


class CharTokenizer:
    """Character-level tokenizer: id 0 is <unk>, ids 1.. are the vocabulary's characters.

    Build ONE vocabulary over every text the model will see (the broad and the domain corpus
    together): a character found only in the domain would otherwise be <unk> during pretraining,
    or get an embedding row that pretraining never trained.
    encode maps a character outside the vocabulary to <unk> (id 0); decode writes <unk> as
    "\\ufffd". So decode(encode(s)) == s when every character of s is in the vocabulary; for any
    other s it equals s with each unknown character replaced by "\\ufffd".
    """

    unk_id = 0

    def __init__(self, chars):
        chars = list(chars)
        self.chars = chars  # id i+1 -> chars[i]
        self.char_to_id = {ch: i + 1 for i, ch in enumerate(chars)}
        self.id_to_char = [UNKNOWN_CHAR] + chars

    @classmethod
    def build(cls, texts, min_count=1):
        """A vocabulary of every character seen at least min_count times over all texts, sorted."""
        if isinstance(texts, str):
            texts = [texts]
        if min_count < 1:
            raise ValueError(f"min_count must be >= 1, got {min_count}")
        counts = Counter()
        for text in texts:
            if not isinstance(text, str):
                raise ValueError(f"texts must be a string or a list of strings, "
                                 f"got an item of type {type(text).__name__}")
            counts.update(text)
        chars = sorted(ch for ch, count in counts.items() if count >= min_count)
        if not chars:
            raise ValueError(f"texts hold no character seen at least min_count={min_count} times; "
                             f"pass non-empty text or a smaller min_count")
        return cls(chars)

    @property
    def vocab_size(self):
        return len(self.chars) + 1  # + <unk>

    def encode(self, text):
        """int64 ids, one per character; characters outside the vocabulary become 0 (<unk>)."""
        lookup = self.char_to_id
        return np.array([lookup.get(ch, 0) for ch in text], dtype=np.int64)

    def decode(self, ids):
        """The text of ids; <unk> (0) becomes "\\ufffd". ValueError for ids outside the vocab."""
        ids = _check_decode_ids(ids, self.vocab_size)
        return "".join([self.id_to_char[i] for i in ids.tolist()])

    def to_dict(self):
        """A JSON-serializable description: {"type": "char", "chars": [...], "unk": "<unk>"}."""
        return {"type": "char", "chars": list(self.chars), "unk": "<unk>"}

    @classmethod
    def from_dict(cls, d):
        """Rebuild from to_dict(); ValueError naming the bad entry."""
        if not isinstance(d, dict) or d.get("type") != "char":
            raise ValueError(f'expected a dict with "type": "char", got {str(d)[:80]}')
        chars = d.get("chars")
        if not isinstance(chars, list):
            raise ValueError(f'd["chars"] must be a list of single characters, '
                             f"got {type(chars).__name__}")
        for i, ch in enumerate(chars):
            if not isinstance(ch, str) or len(ch) != 1:
                raise ValueError(f'd["chars"][{i}] must be a single character, got {ch!r}')
        if len(set(chars)) != len(chars):
            raise ValueError('d["chars"] holds a character twice; each must appear once')
        return cls(chars)

    def __repr__(self):
        return f"CharTokenizer(vocab_size={self.vocab_size})"


# Pre-tokenization: cut text into chunks that merges may not cross (after GPT-2). A chunk is an
# optional space plus a run of letters, of digits, or of other symbols; or a run of whitespace
# (all but its last space, which goes with the next word). Every character matches some branch,
# so the chunks always join back into the whole text.
CHUNK_PATTERN = re.compile(r" ?[^\W\d_]+| ?\d+| ?[^\s\w]+| ?_+|\s+(?!\S)|\s+")


def _merge_pair(ids, pair, new_id):
    """ids with every non-overlapping occurrence of pair (left to right) replaced by new_id."""
    merged = []
    i = 0
    while i < len(ids):
        if i + 1 < len(ids) and ids[i] == pair[0] and ids[i + 1] == pair[1]:
            merged.append(new_id)
            i += 2
        else:
            merged.append(ids[i])
            i += 1
    return merged


class BPETokenizer:
    """Byte-level BPE: ids 0..255 are the bytes; id 256 + k is merges[k], a pair of older ids.

    Every string is UTF-8 bytes, so any text encodes without <unk> and decode(encode(s)) == s.
    merges      list of ((a, b), new_id) in the order they were learned (= their rank)
    vocab       list: id -> the bytes it stands for
    """

    def __init__(self, merges=()):
        self.merges = [((int(a), int(b)), int(new_id)) for (a, b), new_id in merges]
        self.ranks = {pair: rank for rank, (pair, _) in enumerate(self.merges)}
        self.vocab = [bytes([b]) for b in range(256)]
        for (a, b), new_id in self.merges:
            self.vocab.append(self.vocab[a] + self.vocab[b])
        self._chunk_cache = {}  # chunk -> its ids: real text repeats the same words again and again

    @classmethod
    def train(cls, text, vocab_size, verbose=False):
        """Learn vocab_size - 256 merges from text; ties go to the lowest pair (a, b).

        Fast enough for teaching (~200 KB, 256 merges in about a second) by two ideas:
        1. Cut text into chunks (CHUNK_PATTERN) and count each distinct chunk once: "the" may
           occur 10,000 times but is merged once, its pairs weighted by 10,000.
        2. Keep pair counts up to date: a merge only touches the chunks that hold the pair
           (pair_to_words), and only their pair counts change.
        Training stops early, with a smaller vocabulary, if no pair occurs any more.
        """
        if not isinstance(vocab_size, int) or vocab_size < 256:
            raise ValueError(f"vocab_size must be an int >= 256 (the 256 byte ids), got {vocab_size}")
        if not isinstance(text, str) or not text:
            raise ValueError("text must be a non-empty string")
        chunk_counts = Counter(CHUNK_PATTERN.findall(text))
        words = [list(chunk.encode("utf-8")) for chunk in chunk_counts]  # each distinct chunk as ids
        freqs = list(chunk_counts.values())

        pair_counts = Counter()  # (a, b) -> occurrences in the text
        pair_to_words = {}  # (a, b) -> indices of words that may hold it
        for w, ids in enumerate(words):
            for pair in zip(ids, ids[1:]):
                pair_counts[pair] += freqs[w]
                pair_to_words.setdefault(pair, set()).add(w)

        merges = []
        for new_id in range(256, vocab_size):
            if not pair_counts:
                break
            best = max(pair_counts, key=lambda p: (pair_counts[p], -p[0], -p[1]))
            count = pair_counts[best]
            for w in pair_to_words.pop(best):
                old = words[w]
                new = _merge_pair(old, best, new_id)
                if len(new) == len(old):
                    continue  # the pair had left this word through an earlier merge
                for pair in zip(old, old[1:]):  # forget the word's old pairs ...
                    pair_counts[pair] -= freqs[w]
                    if pair_counts[pair] == 0:
                        del pair_counts[pair]
                for pair in zip(new, new[1:]):  # ... and count its new ones
                    pair_counts[pair] += freqs[w]
                    pair_to_words.setdefault(pair, set()).add(w)
                words[w] = new
            pair_counts.pop(best, None)
            merges.append((best, new_id))
            if verbose:
                tokenizer_so_far = cls(merges)
                print(f"merge {new_id - 255}/{vocab_size - 256}: {best} -> {new_id} "
                      f"{tokenizer_so_far.id_to_str(new_id)!r} ({count} times)")
        return cls(merges)

    @property
    def vocab_size(self):
        return 256 + len(self.merges)

    def _encode_chunk(self, chunk):
        """Ids of one chunk: start from its bytes, apply the lowest-rank merge present, repeat."""
        ids = list(chunk.encode("utf-8"))
        while len(ids) >= 2:
            ranked = [(self.ranks[pair], pair) for pair in zip(ids, ids[1:]) if pair in self.ranks]
            if not ranked:
                break
            rank, pair = min(ranked)
            ids = _merge_pair(ids, pair, 256 + rank)
        return ids

    def encode(self, text):
        """int64 ids of text: chunks (CHUNK_PATTERN), each merged in the order merges were learned.

        Text holding a lone surrogate (not valid Unicode, so not UTF-8 encodable) raises
        UnicodeEncodeError, a ValueError.
        """
        ids = []
        for chunk in CHUNK_PATTERN.findall(text):
            if chunk not in self._chunk_cache:
                self._chunk_cache[chunk] = self._encode_chunk(chunk)
            ids.extend(self._chunk_cache[chunk])
        return np.array(ids, dtype=np.int64)

    def decode(self, ids):
        """Text of ids: join their bytes, decode UTF-8 (a split character becomes "\\ufffd")."""
        ids = _check_decode_ids(ids, self.vocab_size)
        return b"".join([self.vocab[i] for i in ids.tolist()]).decode("utf-8", errors="replace")

    def token_bytes(self, token_id):
        """The bytes one id stands for, e.g. token_bytes(256) after training on 'aaab...' is b'aa'."""
        if not 0 <= token_id < self.vocab_size:
            raise ValueError(f"token_id must be in 0..{self.vocab_size - 1}, got {token_id}")
        return self.vocab[token_id]

    def id_to_str(self, token_id):
        """token_bytes as text for reading (a partial UTF-8 character shows as "\\ufffd")."""
        return self.token_bytes(token_id).decode("utf-8", errors="replace")

    def to_dict(self):
        """A JSON-serializable description: {"type": "bpe", "merges": [[a, b, new_id], ...]}."""
        return {"type": "bpe", "merges": [[a, b, new_id] for (a, b), new_id in self.merges]}

    @classmethod
    def from_dict(cls, d):
        """Rebuild from to_dict(); ValueError naming the bad merge."""
        if not isinstance(d, dict) or d.get("type") != "bpe":
            raise ValueError(f'expected a dict with "type": "bpe", got {str(d)[:80]}')
        merges = d.get("merges")
        if not isinstance(merges, list):
            raise ValueError(f'd["merges"] must be a list of [a, b, new_id], got {type(merges).__name__}')
        checked = []
        for k, merge in enumerate(merges):
            new_id = 256 + k
            if (not isinstance(merge, (list, tuple)) or len(merge) != 3
                    or not all(isinstance(x, int) for x in merge)):
                raise ValueError(f'd["merges"][{k}] must be [a, b, new_id] (three ints), got {merge!r}')
            a, b, stored_id = merge
            if stored_id != new_id or not (0 <= a < new_id and 0 <= b < new_id):
                raise ValueError(f'd["merges"][{k}] = {merge!r}: expected new_id {new_id} and '
                                 f"a, b in 0..{new_id - 1} (a merge joins older ids)")
            checked.append(((a, b), new_id))
        return cls(checked)

    def __repr__(self):
        return f"BPETokenizer(vocab_size={self.vocab_size})"


def tokenizer_from_dict(d):
    """CharTokenizer or BPETokenizer from its to_dict(), chosen by d["type"]."""
    kind = d.get("type") if isinstance(d, dict) else None
    if kind == "char":
        return CharTokenizer.from_dict(d)
    if kind == "bpe":
        return BPETokenizer.from_dict(d)
    raise ValueError(f'd["type"] must be "char" or "bpe", got {kind!r}')
