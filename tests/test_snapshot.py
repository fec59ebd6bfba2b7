"""Tests of the frozen corpus snapshot (tinyft/data.py, tinyft/corpus_snapshot/): the loader, its checksum,
the freeze command, and that every default text is the same on every Python."""

import configparser
import fnmatch
import hashlib
import json
import lzma
import pathlib
import platform
import shutil

import pytest

from tinyft import data, passages, tasks

SNAPSHOT_DIR = pathlib.Path(data.__file__).parent / "corpus_snapshot"
MANIFEST = json.loads((SNAPSHOT_DIR / "manifest.json").read_text(encoding="utf-8"))

# sha256 of the default texts, computed by the code BEFORE the snapshot existed (commit 3408777, which built
# them from the running interpreter) on CPython 3.11.7, Linux: the text behind every committed figure.
# The snapshot must give exactly these bytes on every Python. Texts hash as UTF-8; lists and dicts as
# json.dumps(obj, ensure_ascii=False, sort_keys=True).
COMMITTED_SHA256 = {
    "broad": "2cb5a3bb18df3d2c5d694f3b615393a66ff18f907f825e55c956d1d8a08ed058",
    "stdlib_code": "4610c3f9685eaa6ad9a590ffd5c971063c6b3754835895de3320daf833ea30a1",
    "stdlib_code_shifted": "b74ac2df99b7e2fd3fda7bf5e02dba00bfa1469720db97560545ee4dddb96e4b",
    "license": "3b2f81fe21d181c499c59a256c8e1968455d6689d269aa85373bfb6af41da3bf",
    "held_out_docs": "a2496faf6945db0e5c1e2fda755f2eae73ded216d919a39dd074d1f1d9958308",
    "kind_pool": "0bddca44910f1a48ed32bb686011ab575ecf10a81791bcbddfefcfa2d8524e9b",
    "describe_pairs": "14b2f686d6b888bbe55eb1dad7aeb4fd0d9767dfb5c401016371b72539ab42ea",
}


def sha(text):
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def sha_json(obj):
    return sha(json.dumps(obj, ensure_ascii=False, sort_keys=True))


def copy_snapshot(tmp_path):
    folder = tmp_path / "snapshot"
    shutil.copytree(SNAPSHOT_DIR, folder)
    return folder


# ---- the loader and its checksum


def test_loader_returns_what_the_manifest_says():
    raw = lzma.decompress((SNAPSHOT_DIR / MANIFEST["file"]).read_bytes())  # read here, not by the loader
    assert hashlib.sha256(raw).hexdigest() == MANIFEST["sha256"]
    assert len(raw) == MANIFEST["uncompressed_bytes"]
    assert (SNAPSHOT_DIR / MANIFEST["file"]).stat().st_size == MANIFEST["compressed_bytes"] < 1_000_000
    texts = data.load_snapshot()
    assert texts == json.loads(raw.decode("utf-8"))
    assert (texts["python"], texts["implementation"], texts["system"]) == \
        (MANIFEST["python"], MANIFEST["implementation"], MANIFEST["system"])
    counts = MANIFEST["counts"]
    assert len(texts["topics"]) == counts["topics"]
    assert len(texts["docstrings"]) == counts["docstring_modules"]
    assert sum(len(pairs) for pairs in texts["docstrings"].values()) == counts["docstrings"]
    assert len(texts["sources"]) == counts["sources"]
    assert set(texts["sources"]) == set(data.BROAD_DOC_MODULES)  # every module the corpora and tasks read
    assert set(texts["docstrings"]) == set(data.BROAD_DOC_MODULES + data.HELD_OUT_MODULES)


def test_snapshot_folder_ships_the_psf_license_and_every_file_is_package_data():
    notice = (SNAPSHOT_DIR / MANIFEST["license_notice"]).read_text(encoding="utf-8")
    assert MANIFEST["file"] in notice and "PYTHON SOFTWARE FOUNDATION LICENSE VERSION 2" in notice
    assert notice.endswith(data.load_snapshot()["license"])  # the license text, unchanged, after the preamble
    config = configparser.ConfigParser()
    config.read(pathlib.Path(__file__).resolve().parent.parent / "setup.cfg")  # the repository's
    patterns = [p.strip() for p in config["options.package_data"]["tinyft"].split(",")]
    for path in SNAPSHOT_DIR.iterdir():  # pip install . must install each of them
        assert any(fnmatch.fnmatch(f"corpus_snapshot/{path.name}", p) for p in patterns), path.name


def test_one_byte_changed_in_the_compressed_file_raises_a_clear_error(tmp_path):
    folder = copy_snapshot(tmp_path)
    path = folder / MANIFEST["file"]
    blob = bytearray(path.read_bytes())
    blob[len(blob) // 2] ^= 0x01
    path.write_bytes(bytes(blob))
    with pytest.raises(data.SnapshotError, match="does not decompress") as error:
        data.load_snapshot(folder)
    message = str(error.value)
    assert str(path) in message and "--freeze" in message and "reinstall" in message
    assert isinstance(error.value, ValueError)


def test_one_byte_edited_in_the_content_fails_the_sha256_check(tmp_path):
    folder = copy_snapshot(tmp_path)
    path = folder / MANIFEST["file"]
    raw = bytearray(lzma.decompress(path.read_bytes()))
    position = raw.index(b"Return the sample arithmetic mean")
    raw[position] = ord("r")  # a valid xz file holding edited text: only the sha256 can tell
    path.write_bytes(lzma.compress(bytes(raw)))
    with pytest.raises(data.SnapshotError, match="damaged or was edited") as error:
        data.load_snapshot(folder)
    message = str(error.value)
    assert str(path) in message and MANIFEST["sha256"] in message
    assert hashlib.sha256(bytes(raw)).hexdigest() in message and "--freeze" in message


def test_missing_manifest_or_snapshot_file_raises_a_clear_error(tmp_path):
    folder = copy_snapshot(tmp_path)
    (folder / MANIFEST["file"]).unlink()
    with pytest.raises(data.SnapshotError, match=MANIFEST["file"]):
        data.load_snapshot(folder)
    (folder / "manifest.json").unlink()
    with pytest.raises(data.SnapshotError, match="manifest.json"):
        data.load_snapshot(folder)


# ---- freezing


FAKE_TEXT = {
    "python": "3.99.1", "implementation": "CPython", "system": "Linux",
    "topics": {"assert": "The assert statement\n"}, "docstrings": {"abc": [["abc", "Abstract Base Classes."]]},
    "sources": {"abc": "# one line of source\n"}, "license": "PSF LICENSE AGREEMENT FOR PYTHON 3.99.1\n",
}


def test_freeze_writes_a_snapshot_manifest_and_license_that_load_back(tmp_path, monkeypatch):
    monkeypatch.setattr(data, "_live_python_text", lambda: json.loads(json.dumps(FAKE_TEXT)))
    manifest = data.freeze_snapshot(tmp_path)
    assert manifest["file"] == "cpython-3.99.1.json.xz"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["LICENSE-PSF.txt", "cpython-3.99.1.json.xz",
                                                          "manifest.json"]
    raw = lzma.decompress((tmp_path / manifest["file"]).read_bytes())
    assert json.loads(raw) == FAKE_TEXT and hashlib.sha256(raw).hexdigest() == manifest["sha256"]
    assert json.loads((tmp_path / "manifest.json").read_text()) == manifest
    assert data.load_snapshot(tmp_path) == FAKE_TEXT
    assert (tmp_path / "LICENSE-PSF.txt").read_text().endswith(FAKE_TEXT["license"])
    assert not list(tmp_path.glob("*.tmp"))  # no temp file left behind


def test_freeze_for_another_version_replaces_the_old_snapshot(tmp_path, monkeypatch):
    monkeypatch.setattr(data, "_live_python_text", lambda: json.loads(json.dumps(FAKE_TEXT)))
    data.freeze_snapshot(tmp_path)
    newer = {**FAKE_TEXT, "python": "3.99.2"}
    monkeypatch.setattr(data, "_live_python_text", lambda: json.loads(json.dumps(newer)))
    data.freeze_snapshot(tmp_path)
    assert not (tmp_path / "cpython-3.99.1.json.xz").exists()
    assert data.load_snapshot(tmp_path)["python"] == "3.99.2"


def test_freeze_refuses_an_install_without_a_license_and_keeps_the_old_snapshot(tmp_path, monkeypatch):
    monkeypatch.setattr(data, "_live_python_text", lambda: json.loads(json.dumps(FAKE_TEXT)))
    data.freeze_snapshot(tmp_path)
    monkeypatch.setattr(data, "_live_python_text", lambda: {**FAKE_TEXT, "python": "3.99.2", "license": None})
    with pytest.raises(ValueError, match="LICENSE"):
        data.freeze_snapshot(tmp_path)
    assert data.load_snapshot(tmp_path) == FAKE_TEXT


# ---- the same text on every Python


def test_default_texts_are_the_committed_ones_on_every_python():
    """What was version-dependent (broad corpus, code domains, held-out docs, kind and describe pools) is
    now byte-identical to the text of CPython 3.11.7 that the committed figures came from."""
    assert sha(data.broad_corpus()) == COMMITTED_SHA256["broad"]
    for name in data.DOMAINS:
        assert sha(data.domain_corpus(name)) == COMMITTED_SHA256[name], name
    assert sha_json(data.held_out_docs()) == COMMITTED_SHA256["held_out_docs"]
    assert sha_json(passages.kind_pool()) == COMMITTED_SHA256["kind_pool"]
    assert sha_json(passages.describe_pairs()) == COMMITTED_SHA256["describe_pairs"]


def test_corpora_and_task_pools_read_the_snapshot_not_the_interpreter(monkeypatch):
    expected = {"broad": data.broad_corpus(), "code": data.domain_corpus("stdlib_code"),
                "held_out": data.held_out_docs(), "kind": passages.kind_pool()}

    def no_interpreter(*args, **kwargs):
        raise AssertionError("the default build read the running interpreter")

    monkeypatch.setattr(data, "_CACHE", {})
    monkeypatch.setattr(passages, "_CACHE", {})
    for name in ("_live_python_text", "_import_quietly", "_documented_objects", "_source_file_text"):
        monkeypatch.setattr(data, name, no_interpreter)
    assert data.broad_corpus() == expected["broad"]
    assert data.domain_corpus("stdlib_code") == expected["code"]
    assert data.held_out_docs() == expected["held_out"]
    assert passages.kind_pool() == expected["kind"]
    with pytest.raises(AssertionError, match="interpreter"):
        data.broad_corpus(live=True)  # the live build is the one that reads it


SNAPSHOT_PYTHON = (MANIFEST["implementation"], MANIFEST["python"], MANIFEST["system"])
THIS_PYTHON = (platform.python_implementation(), platform.python_version(), platform.system())


@pytest.mark.skipif(THIS_PYTHON != SNAPSHOT_PYTHON,
                    reason=f"the snapshot holds {' '.join(SNAPSHOT_PYTHON)}'s text; this is {' '.join(THIS_PYTHON)}, "
                           "whose live text differs by design")
def test_snapshot_is_byte_identical_to_the_live_build_on_its_own_python():
    live, frozen = data.python_text(live=True), data.python_text()
    for key in ("topics", "docstrings", "sources", "license"):
        assert live[key] == frozen[key], key
    assert data.broad_corpus(live=True) == data.broad_corpus()
    for name in data.DOMAINS:
        assert data.domain_corpus(name, live=True) == data.domain_corpus(name), name
    assert data.held_out_docs(live=True) == data.held_out_docs()
    assert passages.kind_pool(live=True) == passages.kind_pool()
    assert passages.describe_pairs(live=True) == passages.describe_pairs()
