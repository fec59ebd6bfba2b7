"""data: the text tinyft learns from, split and cut into batches.

Map of this file:
  python    python_text(live=False): Python's own text (doc topics, docstrings, stdlib sources, LICENSE),
            from the frozen snapshot corpus_snapshot/cpython-3.11.7.json.xz (0.95 MB, sha256-checked,
            the same on every Python) or, live=True, from this interpreter; `python -m tinyft.data --freeze`
  corpora   broad_corpus(): language reference + stdlib docstrings, ~1.1 MB of English;
            domain_corpus() / domain_modules(): stdlib source code; held_out_docs(): kept out of both
            CORPORA + load_corpus(name); load_text(path) for your files; download(name), optional
  tools     train_val_split(), validation_overlap(), get_batch(), unigram_loss()
Nothing here needs the network: the snapshot ships inside the package.
"""

import hashlib
import importlib
import inspect
import json
import lzma
import os
import pathlib
import platform
import re
import sys
import sysconfig
import urllib.error
import urllib.request
import warnings

import numpy as np

from .checkpoint import atomic_write

# ----------------------------------------------------------------------------------------------
# Module lists. They are fixed on the page (not discovered at run time) so a corpus is the same
# on every machine with the same Python version. Modules deprecated for removal in 3.12/3.13
# (cgi, telnetlib, asyncore, ...) are left out so the lists work on Python 3.10 to 3.13.

# Docstrings of these modules become the fine-tuning task "name -> one-line description"
# (held_out_docs). They must never appear in pretraining text, or the fine-tuned score would
# measure memory instead of learning. They are kept out of the code corpora too (their source
# holds the same docstrings).
HELD_OUT_MODULES = (
    "statistics", "fractions", "textwrap", "difflib", "heapq", "bisect",
    "calendar", "shlex", "fnmatch", "glob", "shutil", "graphlib",
)

# Public pure-Python standard-library modules whose docstrings join the broad corpus.
BROAD_DOC_MODULES = (
    "abc", "argparse", "ast", "base64", "bdb", "cProfile", "cmd", "code", "codeop",
    "collections", "collections.abc", "compileall", "configparser", "contextlib", "contextvars",
    "copy", "copyreg", "csv", "ctypes", "dataclasses", "datetime", "dbm", "dis", "email",
    "email.charset", "email.generator", "email.header", "email.headerregistry", "email.message",
    "email.parser", "email.utils", "encodings", "enum", "filecmp", "fileinput", "functools",
    "getopt", "getpass", "gettext", "gzip", "hashlib", "hmac", "html", "html.parser", "http",
    "http.client", "http.cookies", "http.server", "importlib", "importlib.abc",
    "importlib.metadata", "importlib.util", "inspect", "ipaddress", "json", "json.decoder",
    "json.encoder", "keyword", "linecache", "locale", "logging", "logging.config",
    "logging.handlers", "mimetypes", "modulefinder", "netrc", "ntpath", "numbers", "operator",
    "optparse", "os", "pathlib", "pickle", "pkgutil", "platform", "plistlib",
    "posixpath", "pprint", "profile", "pstats", "pty", "py_compile", "pyclbr", "pydoc", "queue",
    "quopri", "random", "re", "reprlib", "rlcompleter", "runpy", "sched", "secrets",
    "selectors", "shelve", "signal", "site", "smtplib", "socketserver", "sqlite3",
    "stat", "string", "stringprep", "struct", "subprocess", "symtable", "sysconfig", "tabnanny",
    "tarfile", "tempfile", "threading", "timeit", "token", "tokenize", "trace", "traceback",
    "tracemalloc", "types", "typing", "unittest", "unittest.case", "unittest.loader",
    "unittest.result", "unittest.runner", "unittest.suite", "urllib.error", "urllib.parse",
    "urllib.request", "urllib.response", "urllib.robotparser", "uuid", "venv", "warnings",
    "weakref", "webbrowser", "xml.dom.minidom", "xml.etree.ElementTree", "xmlrpc.client",
    "zipapp", "zipfile", "zipimport", "zoneinfo",
)

# Source code of these modules is the "stdlib_code" domain (general-purpose utility code).
CODE_MODULES = (
    "abc", "contextlib", "copy", "csv", "functools", "getopt", "json", "json.decoder",
    "json.encoder", "linecache", "numbers", "operator", "pprint", "queue", "reprlib", "sched",
    "string", "types",
)

# Source code kept OUT of "stdlib_code": internet-format parsers, the same language but other
# names, idioms and vocabulary. "stdlib_code_shifted" is an out-of-distribution test set.
SHIFTED_CODE_MODULES = ("email.utils", "http.cookies", "quopri", "urllib.parse")

_SKIPPED_MODULES = ("antigravity", "this", "tkinter", "idlelib", "turtle", "turtledemo")

# Optional downloads: name -> (url, sha256 of the file's bytes).
# tinyshakespeare: 1,115,394 bytes. The digest was not computed here (no network); it agrees with
# the value published independently by several projects that pin this file. download() checks it.
DOWNLOADS = {
    "tinyshakespeare": (
        "https://raw.githubusercontent.com/karpathy/char-rnn/master/data/tinyshakespeare/input.txt",
        "86c4e6aa9db7c042ec79f339dcb96d42b0075e16b8fc2e86bf0ca57e2dc565ed",
    ),
}

_OFFLINE_ALTERNATIVES = (
    'offline alternatives: load_corpus("broad"), load_corpus("stdlib_code"), '
    "or your own text with load_text(path)"
)

_CACHE = {}  # corpus name ("-live": from this interpreter) -> text, and python_text's dicts; filled on first use


# ----------------------------------------------------------------------------------------------
# Python's own text, read live from this interpreter. Everything here changes with the Python
# version (new docstrings, new topics), which is why the corpora read the frozen snapshot below.


def _normalize(text):
    """Strip trailing spaces on every line and blank lines at both ends; use '\\n' line ends."""
    lines = text.replace("\r\n", "\n").replace("\r", "\n").split("\n")
    return "\n".join(line.rstrip() for line in lines).strip("\n")


def _normalize_prose(text):
    """_normalize, then runs of blank lines become one, so a blank line always means 'next doc'."""
    return re.sub(r"\n{3,}", "\n\n", _normalize(text))


def _import_quietly(name):
    """Import a module by name, or return None when this Python does not have it."""
    if name.split(".")[0] in _SKIPPED_MODULES:
        return None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # e.g. DeprecationWarning on import
        try:
            return importlib.import_module(name)
        except Exception:  # ImportError, or a module that cannot load on this platform
            return None


def _own_doc(obj):
    """The object's own docstring, dedented (inspect.cleandoc), or '' when it has none.

    inspect.getdoc would fall back to a base class's docstring; we read obj.__doc__ so a text
    inherited by a hundred subclasses enters the corpus once, not a hundred times.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # typing.io and typing.re warn when touched
        doc = getattr(obj, "__doc__", None)
    if not isinstance(doc, str):
        return ""
    return _normalize_prose(inspect.cleandoc(doc))


def _documented_objects(module):
    """(qualified name, object) for the module and its public classes, functions and methods.

    'Public' means the name has no leading underscore and the object was defined by this module
    (or by its C twin, e.g. heapq's functions live in _heapq); re-exports are skipped.
    Order: the module, then names sorted, each class followed by its methods sorted.
    """
    name = module.__name__
    owners = (name, "_" + name)
    found = [(name, module)]
    namespace = vars(module)
    for attr in sorted(namespace):
        obj = namespace[attr]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # typing.io and typing.re warn when touched
            owner = getattr(obj, "__module__", None)
        if attr.startswith("_") or owner not in owners:
            continue
        if inspect.isclass(obj):
            found.append((f"{name}.{attr}", obj))
            for method_name in sorted(vars(obj)):
                method = vars(obj)[method_name]
                if isinstance(method, (staticmethod, classmethod)):
                    method = method.__func__
                if not method_name.startswith("_") and inspect.isroutine(method):
                    found.append((f"{name}.{attr}.{method_name}", method))
        elif inspect.isroutine(obj):
            found.append((f"{name}.{attr}", obj))
    return found


def _source_file_text(name):
    """The text of a pure-Python module's source file (module.__file__), or None if it has none."""
    module = _import_quietly(name)
    path = getattr(module, "__file__", None)  # also set for frozen modules such as abc (3.11+)
    if not path or not path.endswith(".py") or not os.path.isfile(path):
        return None
    with open(path, encoding="utf-8") as f:
        return f.read()


def _license_candidates():
    """Where installers put Python's LICENSE text."""
    stdlib = pathlib.Path(sysconfig.get_paths()["stdlib"])
    version = f"{sys.version_info.major}.{sys.version_info.minor}"
    return [
        stdlib / "LICENSE.txt",
        pathlib.Path(sys.base_prefix) / "LICENSE.txt",
        pathlib.Path(f"/usr/share/doc/python{version}/copyright"),
        pathlib.Path(f"/usr/share/doc/python{version}-minimal/copyright"),
    ]


def _live_python_text():
    """The text tinyft reads from this interpreter, as the dict python_text() describes."""
    from pydoc_data.topics import topics

    docstrings = {}
    for module_name in BROAD_DOC_MODULES + HELD_OUT_MODULES:
        module = _import_quietly(module_name)
        if module is None:
            continue
        pairs = [[qualified_name, _own_doc(obj)] for qualified_name, obj in _documented_objects(module)]
        docstrings[module_name] = [pair for pair in pairs if pair[1]]  # objects without a doc: skipped
    sources = {}
    for module_name in BROAD_DOC_MODULES:  # CODE_MODULES and SHIFTED_CODE_MODULES are among them
        source = _source_file_text(module_name)
        if source is not None:
            sources[module_name] = source
    license_path = next((path for path in _license_candidates() if path.is_file()), None)
    return {
        "python": platform.python_version(),
        "implementation": platform.python_implementation(),
        "system": platform.system(),
        "topics": dict(topics),
        "docstrings": docstrings,
        "sources": sources,
        "license": license_path.read_text(encoding="utf-8", errors="replace") if license_path else None,
    }


# ----------------------------------------------------------------------------------------------
# The frozen snapshot: the same text on every Python. One lzma-compressed JSON file of the dict
# python_text() describes, written once by `python -m tinyft.data --freeze` on CPython 3.11.7;
# manifest.json beside it holds the sha256 of its uncompressed bytes, checked on every load.

SNAPSHOT_DIR = pathlib.Path(__file__).parent / "corpus_snapshot"
SNAPSHOT_MANIFEST = "manifest.json"
SNAPSHOT_LICENSE = "LICENSE-PSF.txt"
_SNAPSHOT_KEYS = ("python", "implementation", "system", "topics", "docstrings", "sources", "license")
_LICENSE_PREAMBLE = """\
tinyft's corpus snapshot ({file}) holds text copied from {implementation} {python}:
the documentation topics of pydoc_data.topics, the docstrings of {n_docstring_modules} standard-library
modules, the source code of {n_sources} standard-library modules, and Python's LICENSE text.
That text is copyright the Python Software Foundation (the copyright lines are in the license
below) and is used under the PSF License Agreement reproduced below: Python's own LICENSE file,
unchanged, as {implementation} {python} ships it.
tinyft's own code is under the MIT license (its package metadata); this notice covers only the copied text.

"""


class SnapshotError(ValueError):
    """The corpus snapshot is missing, damaged or edited (its sha256 does not match the manifest)."""


def _repair_hint(python="3.11.7"):
    return (f"reinstall tinyft (pip install --force-reinstall tinyft), or rebuild the snapshot on CPython "
            f"{python} with `python -m tinyft.data --freeze`; or read this interpreter's own text with "
            f"live=True (corpus 'broad-live')")


def load_snapshot(folder=None):
    """The snapshot's dict (see python_text), read from folder (default SNAPSHOT_DIR) and checked.

    Reads folder/manifest.json, decompresses the file it names, and compares the sha256 of the
    uncompressed bytes with the manifest's. Any failure raises SnapshotError naming the file.
    """
    folder = SNAPSHOT_DIR if folder is None else pathlib.Path(folder)
    manifest_path = folder / SNAPSHOT_MANIFEST
    try:
        manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
        path, expected = folder / manifest["file"], manifest["sha256"]
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise SnapshotError(f"{manifest_path} is missing or unreadable ({error!r}); {_repair_hint()}") from None
    python = manifest.get("python", "3.11.7")
    try:
        raw = lzma.decompress(path.read_bytes())
    except (OSError, lzma.LZMAError, EOFError) as error:
        raise SnapshotError(f"{path} is missing or damaged: it does not decompress ({error}); "
                            f"{_repair_hint(python)}") from None
    actual = hashlib.sha256(raw).hexdigest()
    if actual != expected:
        raise SnapshotError(f"{path} is damaged or was edited: its content has sha256 {actual}, but "
                            f"{manifest_path} expects {expected}; {_repair_hint(python)}")
    texts = json.loads(raw.decode("utf-8"))
    missing = [key for key in _SNAPSHOT_KEYS if key not in texts]
    if missing:
        raise SnapshotError(f"{path} lacks the entries {missing}; {_repair_hint(python)}")
    return texts


def python_text(live=False):
    """Python's own text that every corpus and task is built from, as one dict (cached; do not modify).

    live=False  the frozen snapshot (load_snapshot): CPython 3.11.7's text, the same on every Python
    live=True   this interpreter's text, read now (its size and content change with the version)
    Keys: "python", "implementation", "system" (where it came from); "topics" {key: text} of
    pydoc_data.topics; "docstrings" {module: [[qualified name, docstring], ...]} for BROAD_DOC_MODULES
    and HELD_OUT_MODULES (module first, then _documented_objects order, undocumented objects left out);
    "sources" {module: text of its .py file} for BROAD_DOC_MODULES; "license" Python's LICENSE text
    (None live when this install ships none).
    """
    key = "python_text-live" if live else "python_text"
    if key not in _CACHE:
        _CACHE[key] = _live_python_text() if live else load_snapshot()
    return _CACHE[key]


def freeze_snapshot(folder=None):
    """Write this interpreter's text as the snapshot into folder (default SNAPSHOT_DIR); return the manifest.

    Three files, each written atomically (temp file, then rename): the compressed JSON (named after
    the Python version), the PSF license notice, and last manifest.json, which switches to the new
    file; a snapshot of another version that the old manifest named is then removed. The result is
    read back through load_snapshot before returning. The same Python gives the same bytes again.
    """
    folder = SNAPSHOT_DIR if folder is None else pathlib.Path(folder)
    try:
        previous = json.loads((folder / SNAPSHOT_MANIFEST).read_text(encoding="utf-8"))["file"]
    except (OSError, ValueError, KeyError, TypeError):
        previous = None
    texts = _live_python_text()
    if texts["license"] is None:
        searched = ", ".join(str(path) for path in _license_candidates())
        raise ValueError(f"cannot freeze: Python's LICENSE text was not found (searched: {searched}); the "
                         "snapshot must carry it. Freeze on a Python install that ships LICENSE.txt")
    payload = json.dumps(texts, ensure_ascii=False, sort_keys=True, separators=(",", ":")).encode("utf-8")
    compressed = lzma.compress(payload, preset=9 | lzma.PRESET_EXTREME)
    name = f"{texts['implementation'].lower()}-{texts['python']}.json.xz"
    manifest = {
        "file": name,
        "sha256": hashlib.sha256(payload).hexdigest(),
        "python": texts["python"],
        "implementation": texts["implementation"],
        "system": texts["system"],
        "uncompressed_bytes": len(payload),
        "compressed_bytes": len(compressed),
        "counts": {"topics": len(texts["topics"]), "docstring_modules": len(texts["docstrings"]),
                   "docstrings": sum(len(pairs) for pairs in texts["docstrings"].values()),
                   "sources": len(texts["sources"])},
        "license_notice": SNAPSHOT_LICENSE,
        "freeze_command": "python -m tinyft.data --freeze",
    }
    notice = _LICENSE_PREAMBLE.format(file=name, implementation=texts["implementation"], python=texts["python"],
                                      n_docstring_modules=len(texts["docstrings"]),
                                      n_sources=len(texts["sources"])) + texts["license"]
    folder.mkdir(parents=True, exist_ok=True)
    atomic_write(folder / name, compressed)  # a normal file's mode: package data every user can read
    atomic_write(folder / SNAPSHOT_LICENSE, notice.encode("utf-8"))
    atomic_write(folder / SNAPSHOT_MANIFEST, (json.dumps(manifest, indent=2) + "\n").encode("utf-8"))
    plain_name = isinstance(previous, str) and previous.endswith(".json.xz") and not set("/\\") & set(previous)
    if plain_name and previous != name and (folder / previous).is_file():
        (folder / previous).unlink()  # the old version's snapshot: no manifest names it any more
    if load_snapshot(folder) != json.loads(payload):
        raise SnapshotError(f"{folder / name} does not read back as written")
    if folder.resolve() == SNAPSHOT_DIR.resolve():
        _CACHE.clear()  # texts built from the old snapshot
    return manifest


# ----------------------------------------------------------------------------------------------
# The corpora, built from python_text(): the snapshot by default, this interpreter's text with live=True


def _held_out_docstrings(live=False):
    """Every docstring of the held-out modules (module, classes, functions, methods)."""
    docstrings = python_text(live)["docstrings"]
    return {doc for module_name in HELD_OUT_MODULES for _, doc in docstrings.get(module_name, [])}


def held_out_docs(live=False):
    """(qualified name, first line of its docstring) for the public API of HELD_OUT_MODULES.

    Example: ('statistics.mean', 'Return the sample arithmetic mean of data.').
    Order: modules as listed in HELD_OUT_MODULES, then as in _documented_objects (sorted names).
    Modules themselves and objects without a docstring are skipped. 181 pairs in the snapshot.
    """
    docstrings = python_text(live)["docstrings"]
    pairs = []
    for module_name in HELD_OUT_MODULES:
        for qualified_name, doc in docstrings.get(module_name, []):
            if qualified_name != module_name:  # the module's own docstring is not a pair
                pairs.append((qualified_name, doc.split("\n")[0].strip()))
    return pairs


def broad_corpus(live=False):
    """The default pretraining text: ~1.1 MB of English about Python, built offline.

    Contents, in order: the language reference topics of pydoc_data.topics (sorted by key), then
    the docstrings of BROAD_DOC_MODULES (each module, its public classes, functions and methods).
    Docs are separated by one blank line (runs of blank lines inside a doc become one), trailing
    spaces are stripped, and a docstring shared by several objects is kept once.
    Excluded: every docstring of HELD_OUT_MODULES (see held_out_docs).
    From the snapshot (CPython 3.11.7, Linux), on every Python: 1,071,483 characters, 1,072,667
    UTF-8 bytes, 109 distinct characters; 0.2 s to load and build, then cached.
    live=True builds it from this interpreter instead, whose docstrings differ with its version
    (3.10.13: 1,055,260 characters; 3.12.1: 1,100,502; 3.13.0: 1,122,007).
    The same in a Jupyter kernel as in a plain process: pdb is not in BROAD_DOC_MODULES because
    ipykernel replaces pdb.Pdb with IPython's debugger, which would drop its docstrings there.
    """
    key = "broad-live" if live else "broad"
    if key in _CACHE:
        return _CACHE[key]
    texts = python_text(live)
    pieces = [_normalize_prose(texts["topics"][topic]) for topic in sorted(texts["topics"])]
    seen = set(pieces) | _held_out_docstrings(live)  # held-out texts count as 'already seen'
    for module_name in BROAD_DOC_MODULES:
        for _, doc in texts["docstrings"].get(module_name, []):
            if doc not in seen:
                seen.add(doc)
                pieces.append(doc)
    text = "\n\n".join(piece for piece in pieces if piece) + "\n"
    _CACHE[key] = text
    return text


DOMAINS = ("stdlib_code", "stdlib_code_shifted", "license")


def domain_modules(name="stdlib_code", live=False):
    """Module name -> source text for a code domain ("stdlib_code" or "stdlib_code_shifted").

    Modules without a source file are skipped; ValueError if none is found (live=True on an
    install that ships only compiled .pyc files).
    """
    if name == "stdlib_code":
        module_names = CODE_MODULES
    elif name == "stdlib_code_shifted":
        module_names = SHIFTED_CODE_MODULES
    else:
        raise ValueError(f'name must be "stdlib_code" or "stdlib_code_shifted", got {name!r}')
    sources = python_text(live)["sources"]
    found = {module_name: _normalize(sources[module_name]) for module_name in module_names
             if sources.get(module_name)}
    if not found:
        raise ValueError(
            f"no source file found for any module of {name!r}; this Python install ships no .py "
            f"files for them. Use load_corpus('broad') or load_text(path) instead."
        )
    return found


def domain_corpus(name="stdlib_code", live=False):
    """A specialized domain that differs clearly from the broad prose.

    "stdlib_code"          source of CODE_MODULES, in that order, separated by blank lines.
                           From the snapshot: 243,781 characters, 243,783 bytes, 98 distinct
                           characters; a few ms to build, then cached.
    "stdlib_code_shifted"  source of SHIFTED_CODE_MODULES: code, but not the code above
                           (85,242 characters) - an out-of-distribution test.
    "license"              Python's LICENSE text (13,936 characters). live=True: ValueError if
                           this install ships none.
    live=True builds the domain from this interpreter's files instead of the snapshot.
    """
    if name not in DOMAINS:
        raise ValueError(f"unknown domain {name!r}; valid names are {', '.join(DOMAINS)}")
    key = name + "-live" if live else name
    if key not in _CACHE:
        if name == "license":
            text = python_text(live)["license"]
            if text is None:
                searched = ", ".join(str(path) for path in _license_candidates())
                raise ValueError(
                    f"Python's LICENSE text was not found on this install (searched: {searched}). "
                    f'Use domain_corpus("license") (the snapshot\'s copy) or load_text(path) on your own copy.'
                )
            _CACHE[key] = _normalize(text) + "\n"
        else:
            _CACHE[key] = "\n\n".join(domain_modules(name, live).values()) + "\n"
    return _CACHE[key]


# ----------------------------------------------------------------------------------------------
# The registry, your own files, and downloads

CORPORA = {
    "broad": broad_corpus,
    "stdlib_code": lambda: domain_corpus("stdlib_code"),
    "stdlib_code_shifted": lambda: domain_corpus("stdlib_code_shifted"),
    "license": lambda: domain_corpus("license"),
    # the same, built from the running interpreter instead of the snapshot
    "broad-live": lambda: broad_corpus(live=True),
    "stdlib_code-live": lambda: domain_corpus("stdlib_code", live=True),
    "stdlib_code_shifted-live": lambda: domain_corpus("stdlib_code_shifted", live=True),
    "license-live": lambda: domain_corpus("license", live=True),
}


def load_corpus(name="broad"):
    """Text of a named corpus: a key of CORPORA (offline) or of DOWNLOADS (fetched once, cached)."""
    if name in CORPORA:
        return CORPORA[name]()
    if name in DOWNLOADS:
        return load_text(download(name))
    valid = ", ".join(list(CORPORA) + list(DOWNLOADS))
    raise ValueError(f"unknown corpus {name!r}; valid names are {valid} (or use load_text(path))")


TEXT_SUFFIXES = (".txt", ".md", ".py")


def _read_text_file(path):
    """UTF-8 text of one file; ValueError naming the file if it is binary or not UTF-8."""
    data = path.read_bytes()
    if b"\x00" in data:
        raise ValueError(f"{path} looks binary (it contains NUL bytes); expected a UTF-8 text file")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as error:
        raise ValueError(
            f"{path} is not UTF-8 text (undecodable byte at offset {error.start}); "
            f"expected a UTF-8 text file - re-save it as UTF-8"
        ) from None
    return text.replace("\r\n", "\n")


def load_text(path):
    """Text of your own data: one file, or a folder of *.txt / *.md / *.py files.

    A folder is walked recursively (hidden files and folders skipped), files sorted by their
    path, empty files skipped, texts joined by a blank line. Line ends become '\\n'.
    load_text takes a path only: if you already hold the text as a string, use it directly.
    Errors (ValueError, naming the file): missing path, empty file, binary or non-UTF-8 file,
    folder without text files.
    """
    source = pathlib.Path(path)
    if not source.exists():
        hint = ""
        if isinstance(path, str) and ("\n" in path or len(path) > 255):
            hint = " It looks like text, not a path: load_text takes a path; use the string itself."
        shown = repr(path) if len(str(path)) <= 80 else repr(str(path)[:77] + "...")
        raise ValueError(f"no file or folder at {shown}; expected an existing path.{hint}")
    if source.is_file():
        text = _read_text_file(source)
        if not text.strip():
            raise ValueError(f"{source} is empty; expected a text file with some text in it")
        return text
    files = []
    for file in sorted(source.rglob("*")):
        hidden = any(part.startswith(".") for part in file.relative_to(source).parts)
        if file.is_file() and file.suffix in TEXT_SUFFIXES and not hidden:
            files.append(file)
    texts = []
    for file in files:
        text = _read_text_file(file)
        if text.strip():
            texts.append(text.strip("\n"))
    if not texts:
        raise ValueError(
            f"folder {source} holds no non-empty {'/'.join(TEXT_SUFFIXES)} files; "
            f"expected at least one text file"
        )
    return "\n\n".join(texts) + "\n"


class OfflineError(ConnectionError):
    """A download failed because the network could not be reached."""


def default_cache_dir():
    """$TINYFT_CACHE if set, else ~/.cache/tinyft."""
    return pathlib.Path(os.environ.get("TINYFT_CACHE") or pathlib.Path.home() / ".cache" / "tinyft")


def download(name, cache_dir=None, opener=urllib.request.urlopen):
    """Fetch a file of DOWNLOADS once into the cache folder and return its path.

    cache_dir  defaults to default_cache_dir()
    opener     called as opener(url, timeout=60); returns a file-like response (tests pass a fake)
    A cached file is checked against its sha256 and reused; a bad one is fetched again.
    Errors: unknown name -> ValueError; sha256 mismatch -> ValueError (nothing is kept);
    no network -> OfflineError (a ConnectionError) naming the offline alternatives.
    """
    if name not in DOWNLOADS:
        raise ValueError(f"unknown download {name!r}; valid names are {', '.join(DOWNLOADS)}")
    url, expected_sha256 = DOWNLOADS[name]
    folder = pathlib.Path(cache_dir) if cache_dir is not None else default_cache_dir()
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.txt"
    if path.is_file() and hashlib.sha256(path.read_bytes()).hexdigest() == expected_sha256:
        return path
    try:
        with opener(url, timeout=60) as response:
            data = response.read()
    except (urllib.error.URLError, OSError) as error:
        raise OfflineError(f"could not download {name!r} from {url} ({error}); "
                           f"{_OFFLINE_ALTERNATIVES}") from error
    actual_sha256 = hashlib.sha256(data).hexdigest()
    if actual_sha256 != expected_sha256:
        raise ValueError(
            f"download {name!r} from {url} has sha256 {actual_sha256}, expected {expected_sha256}; "
            f"the file was not kept. Retry later, or use the {_OFFLINE_ALTERNATIVES}"
        )
    atomic_write(path, data)  # a temp file, then a rename: the cache never holds half a file
    return path


# ----------------------------------------------------------------------------------------------
# Splits, overlap, batches, baseline


def _check_ids(ids, argument):
    """A 1-D integer array of token ids, or ValueError naming the argument."""
    ids = np.asarray(ids)
    if ids.ndim != 1 or not np.issubdtype(ids.dtype, np.integer):
        raise ValueError(f"{argument} must be a 1-D integer array of token ids, "
                         f"got shape {ids.shape} and dtype {ids.dtype}")
    if ids.size and ids.min() < 0:
        raise ValueError(f"{argument} holds negative token ids (min {ids.min()}); "
                         f"expected ids >= 0")
    return ids


def train_val_split(ids, val_fraction=0.1, chunk_size=None, seed=0):
    """Split token ids into (train, val) by whole contiguous chunks, chosen with a seeded RNG.

    Why chunks: a split by single tokens would surround each validation token with training
    text (the model would have seen every validation window); a split at the end would make the
    validation set one topic only (the last modules of the corpus). Chunks of a few thousand
    tokens keep windows intact and sample every part of the corpus. Each side keeps its chunks
    in corpus order; only windows that cross a seam between chunks see text that never occurred.
    round(val_fraction * n_chunks) chunks (at least 1) go to val; the final short chunk, if
    any, goes to train.
    chunk_size  tokens per chunk; None means 4096, or len(ids) // 20 for a text too short to give
                20 chunks of 4096 (so a small file of your own still splits).
    """
    ids = _check_ids(ids, "ids")
    if not 0.0 < val_fraction < 1.0:
        raise ValueError(f"val_fraction must be between 0 and 1 (exclusive), got {val_fraction}")
    if chunk_size is None:
        chunk_size = max(1, min(4096, len(ids) // 20))
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be a positive number of tokens, got {chunk_size}")
    n_chunks = len(ids) // chunk_size
    if n_chunks < 2:
        raise ValueError(f"ids has {len(ids)} tokens, fewer than 2 chunks of "
                         f"chunk_size={chunk_size}; pass a smaller chunk_size "
                         f"(at most {len(ids) // 2})")
    n_val = min(max(1, round(val_fraction * n_chunks)), n_chunks - 1)
    rng = np.random.default_rng(seed)
    val_chunks = set(rng.choice(n_chunks, size=n_val, replace=False).tolist())
    train_parts, val_parts = [], []
    for chunk in range(n_chunks):
        piece = ids[chunk * chunk_size:(chunk + 1) * chunk_size]
        (val_parts if chunk in val_chunks else train_parts).append(piece)
    train_parts.append(ids[n_chunks * chunk_size:])  # the short tail
    return np.concatenate(train_parts), np.concatenate(val_parts)


_HASH_BASE = np.uint64(0x100000001B3)  # the 64-bit FNV prime: any large odd number works


def _window_hashes(ids, window):
    """A 64-bit polynomial hash of every window ids[i : i + window], as one uint64 array.

    h = ((t0 + 1) * B^(w-1) + (t1 + 1) * B^(w-2) + ... + (t_{w-1} + 1)) mod 2^64, built with one
    vector operation per position in the window (uint64 arithmetic wraps around mod 2^64).
    """
    tokens = ids.astype(np.uint64) + np.uint64(1)
    n_windows = len(ids) - window + 1
    hashes = np.zeros(n_windows, dtype=np.uint64)
    for offset in range(window):
        hashes = hashes * _HASH_BASE + tokens[offset:offset + n_windows]
    return hashes


def validation_overlap(train_ids, val_ids, window=32, stride=None):
    """Fraction of validation windows that also occur verbatim somewhere in train.

    Validation windows start at 0, stride, 2*stride, ... (stride defaults to window, so they do
    not overlap); every train window (stride 1) is hashed into a sorted table. A high value means
    the validation loss measures memory more than generalization (e.g. text repeated in the corpus).
    Two different windows share a 64-bit hash with probability ~ n_train * n_val / 2^64: negligible.
    """
    train_ids = _check_ids(train_ids, "train_ids")
    val_ids = _check_ids(val_ids, "val_ids")
    stride = window if stride is None else stride
    if window < 1 or stride < 1:
        raise ValueError(f"window and stride must be positive, "
                         f"got window={window}, stride={stride}")
    for argument, ids in (("train_ids", train_ids), ("val_ids", val_ids)):
        if len(ids) < window:
            raise ValueError(f"{argument} has {len(ids)} tokens, fewer than window={window}; "
                             f"pass a smaller window")
    train_hashes = np.sort(_window_hashes(train_ids, window))  # a sorted table: binary search
    val_hashes = _window_hashes(val_ids, window)[::stride]
    positions = np.searchsorted(train_hashes, val_hashes)  # where each val hash would go
    positions = np.minimum(positions, len(train_hashes) - 1)
    found = train_hashes[positions] == val_hashes
    return float(found.mean())


def get_batch(data, batch_size, block_size, rng):
    """A random batch of windows: x = data[s : s+T], y = data[s+1 : s+T+1] for B random starts s.

    data        1-D array of token ids
    rng         a np.random.Generator: the same seed gives the same batches
    Returns (x, y), both int64 arrays shaped (B, T) = (batch_size, block_size).
    """
    data = _check_ids(data, "data")
    if not isinstance(rng, np.random.Generator):
        raise ValueError(f"rng must be a numpy.random.Generator, e.g. np.random.default_rng(0); "
                         f"got {type(rng).__name__}")
    if batch_size < 1 or block_size < 1:
        raise ValueError(f"batch_size and block_size must be positive, "
                         f"got batch_size={batch_size}, block_size={block_size}")
    if len(data) < block_size + 1:
        raise ValueError(f"data has {len(data)} tokens but block_size={block_size} needs at least "
                         f"{block_size + 1}; pass a smaller block_size (at most {len(data) - 1})")
    starts = rng.integers(0, len(data) - block_size, size=batch_size)  # last start: len - T - 1
    x = np.empty((batch_size, block_size), dtype=np.int64)  # (B, T)
    y = np.empty((batch_size, block_size), dtype=np.int64)  # (B, T)
    for row, start in enumerate(starts):
        x[row] = data[start:start + block_size]
        y[row] = data[start + 1:start + block_size + 1]
    return x, y


def unigram_loss(train_ids, val_ids, vocab_size):
    """Cross-entropy (nats/token) on val of the unigram model fitted on train, add-one smoothed.

    p(token) = (count_in_train(token) + 1) / (len(train) + vocab_size); loss = -mean log p(val).
    A language model that does not beat this number has learned nothing about context.
    """
    train_ids = _check_ids(train_ids, "train_ids")
    val_ids = _check_ids(val_ids, "val_ids")
    if len(val_ids) == 0:
        raise ValueError("val_ids is empty; expected at least one token")
    for argument, ids in (("train_ids", train_ids), ("val_ids", val_ids)):
        if ids.size and ids.max() >= vocab_size:
            raise ValueError(f"{argument} holds id {ids.max()} >= vocab_size={vocab_size}; "
                             f"pass the tokenizer's vocab_size")
    counts = np.bincount(train_ids, minlength=vocab_size)  # (V,)
    probs = (counts + 1) / (len(train_ids) + vocab_size)  # (V,)
    return float(-np.mean(np.log(probs[val_ids])))


# ----------------------------------------------------------------------------------------------
# Freezing the snapshot from the shell (no argparse here: only the command line imports it)

if __name__ == "__main__":
    arguments = sys.argv[1:]
    if arguments == ["--freeze"]:
        out = None
    elif len(arguments) == 3 and arguments[:2] == ["--freeze", "--out"]:
        out = arguments[2]
    else:
        sys.exit(f"usage: python -m tinyft.data --freeze [--out FOLDER]\n"
                 f"  writes this interpreter's text as the corpus snapshot (default FOLDER: {SNAPSHOT_DIR})")
    print(json.dumps(freeze_snapshot(out), indent=2))
