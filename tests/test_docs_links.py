"""The links between lecture notes, notebooks and source files resolve, and docs/index.md is complete.

Checked, with failures that name the file and the broken link:
  1. every relative link [text](target) in docs/*.md, README.md and the notebooks' markdown cells points
     at an existing file or folder, and a `#anchor` at an existing heading (GitHub's slugs);
  2. every backticked repository path in docs/*.md and README.md (`tinyft/nn.py`, `notebooks/01_autograd.ipynb`,
     `tests/test_nn.py`, `docs/`) exists;
  3. every tinyft/**/*.py source file is mentioned in docs/index.md;
  4. every name in docs/index.md's public-name reference still exists.
The reference section of docs/index.md is generated from the modules themselves:
    python tests/test_docs_links.py --write-reference
rewrites it in place (between the <!-- reference:start --> and <!-- reference:end --> markers).
"""

import importlib
import inspect
import json
import re
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
DOCS = sorted((REPO / "docs").glob("*.md")) + [REPO / "README.md"]
NOTEBOOKS = sorted((REPO / "notebooks").glob("*.ipynb"))
INDEX = REPO / "docs" / "index.md"
SOURCES = sorted(p for p in (REPO / "tinyft").rglob("*.py") if "__pycache__" not in p.parts)

FENCE = re.compile(r"^(```|~~~).*?^\1[ \t]*$", re.S | re.M)  # fenced code blocks
CODE_SPAN = re.compile(r"`[^`\n]*`")
LINK = re.compile(r"!?\[(?:[^\[\]]|\[[^\]]*\])*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")  # [text](target "title")
REF_LINK = re.compile(r"^\s*\[[^\]]+\]:\s*<?(\S+?)>?(?:\s+.*)?$", re.M)  # [label]: target
HEADING = re.compile(r"^#{1,6}[ \t]+(.+?)[ \t]*#*[ \t]*$", re.M)
REPO_PATH = re.compile(r"^(?:tinyft|notebooks|docs|tests|benchmarks)(?:/[\w.\-]+)*/?$")
EXTERNAL = re.compile(r"^[a-z][a-z0-9+.\-]*:", re.I)  # http:, https:, mailto:, ...


def _rel(path):
    return path.relative_to(REPO).as_posix()


def _markdown_of(path):
    """The markdown text of a .md file, or of a notebook's markdown cells joined."""
    if path.suffix == ".ipynb":
        cells = json.loads(path.read_text(encoding="utf-8"))["cells"]
        return "\n\n".join("".join(c["source"]) for c in cells if c["cell_type"] == "markdown")
    return path.read_text(encoding="utf-8")


def _prose(text):
    """Markdown without fenced code blocks and code spans: what links and headings are read from."""
    return CODE_SPAN.sub("", FENCE.sub("", text))


def slug(heading):
    """GitHub's anchor for a heading: lower case, markup and punctuation dropped, spaces -> hyphens."""
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # a link in a heading keeps its text
    text = re.sub(r"<[^>]+>", "", text).replace("`", "").replace("*", "")
    text = re.sub(r"[^\w\- ]", "", text.strip().lower())
    return text.replace(" ", "-")


def anchors(path):
    """Every anchor a file offers (duplicate headings get -1, -2, ... as on GitHub)."""
    found, seen = set(), {}
    for heading in HEADING.findall(FENCE.sub("", _markdown_of(path))):
        base = slug(heading)
        n = seen.get(base, 0)
        seen[base] = n + 1
        found.add(base if n == 0 else f"{base}-{n}")
    return found


def broken_links(path):
    """(target, problem) for each relative link in `path` that does not resolve."""
    text = _prose(_markdown_of(path))
    problems = []
    for target in LINK.findall(text) + REF_LINK.findall(text):
        if EXTERNAL.match(target):
            continue
        file_part, _, anchor = target.partition("#")
        dest = path if not file_part else (path.parent / file_part).resolve()
        if not dest.exists():
            problems.append((target, f"{dest.relative_to(REPO) if dest.is_relative_to(REPO) else dest} does not exist"))
        elif anchor and dest.suffix in (".md", ".ipynb") and anchor not in anchors(dest):
            problems.append((target, f"no heading with anchor #{anchor} in {_rel(dest)}"))
    return problems


@pytest.mark.parametrize("path", DOCS + NOTEBOOKS, ids=[_rel(p) for p in DOCS + NOTEBOOKS])
def test_relative_links_resolve(path):
    problems = broken_links(path)
    assert not problems, f"{_rel(path)} has broken links:\n" + "\n".join(f"  ({t}) -> {why}" for t, why in problems)


@pytest.mark.parametrize("path", DOCS, ids=[_rel(p) for p in DOCS])
def test_backticked_repository_paths_exist(path):
    text = FENCE.sub("", path.read_text(encoding="utf-8"))
    spans = {span.strip("`").strip() for span in CODE_SPAN.findall(text)}
    missing = sorted(s for s in spans if REPO_PATH.match(s) and not (REPO / s).exists())
    assert not missing, f"{_rel(path)} mentions paths that do not exist: " + ", ".join(f"`{m}`" for m in missing)


def test_every_source_file_is_in_the_index():
    assert INDEX.exists(), "docs/index.md is missing"
    index = INDEX.read_text(encoding="utf-8")
    missing = [_rel(p) for p in SOURCES if _rel(p) not in index]
    assert not missing, "docs/index.md does not mention these source files: " + ", ".join(missing)


# ----------------------------------------------------------------------------------------------------
# The public-name reference in docs/index.md
# ----------------------------------------------------------------------------------------------------

REFERENCE_START, REFERENCE_END = "<!-- reference:start -->", "<!-- reference:end -->"


def _module_names():
    """tinyft and every module below it, in source order (tinyft.__main__ excluded: importing it runs the CLI)."""
    names = []
    for p in SOURCES:
        parts = list(p.relative_to(REPO).with_suffix("").parts)
        if parts[-1] == "__main__":
            continue
        if parts[-1] == "__init__":
            parts = parts[:-1]
        names.append(".".join(parts))
    return names


def public_names(module):
    """(name, object) for what a module offers: __all__ if it has one, otherwise the public classes and
    functions defined in it, and its UPPER_CASE constants."""
    if hasattr(module, "__all__"):
        names = list(module.__all__)
    else:
        names = []
        for name, obj in vars(module).items():
            if name.startswith("_"):
                continue
            defined_here = getattr(obj, "__module__", None) == module.__name__
            if (inspect.isclass(obj) or inspect.isfunction(obj) or hasattr(obj, "py_func")) and defined_here:
                names.append(name)
            elif name.isupper() and isinstance(obj, (int, float, str, tuple, frozenset, dict)):
                names.append(name)
    return [(name, getattr(module, name)) for name in names]


def _kind(obj):
    if inspect.ismodule(obj):
        return "module"
    if inspect.isclass(obj):
        return "class"
    if callable(obj):
        return "function"
    return "constant"


def _summary(obj):
    """The first sentence of an object's own docstring (a class without one does not borrow its parent's)."""
    obj = getattr(obj, "py_func", obj)  # a Numba dispatcher: the Python function's docstring
    doc = vars(obj).get("__doc__") if inspect.isclass(obj) else getattr(obj, "__doc__", None)
    if not doc:
        return ""
    first = inspect.cleandoc(doc).split("\n\n")[0].replace("\n", " ")
    sentence = re.match(r"(.+?\.)(\s|$)", first)
    return (sentence.group(1) if sentence else first).replace("|", "\\|")


def generate_reference():
    """The markdown of the reference section, built by importing every module."""
    lines = [REFERENCE_START,
             "<!-- generated by `python tests/test_docs_links.py --write-reference`; edit the docstrings, not this -->", ""]
    top = importlib.import_module("tinyft")
    exported = [n for n in dir(top) if not n.startswith("_") and not inspect.ismodule(getattr(top, n))]
    lines.append("**`import tinyft`** gives: " + ", ".join(
        f"`tinyft.{n}`" for n in sorted(exported, key=str.lower)) + " (each also importable from the module below that defines it).")
    lines.append("")
    for modname in _module_names():
        if modname == "tinyft":
            continue
        module = importlib.import_module(modname)
        path = modname.replace(".", "/") + ("/__init__.py" if Path(module.__file__).name == "__init__.py" else ".py")
        lines.append(f"### `{modname}` ([{path}](../{path}))")
        lines.append("")
        rows = public_names(module)
        constants = [name for name, obj in rows if _kind(obj) == "constant"]
        for name, obj in rows:
            if _kind(obj) != "constant":
                summary = _summary(obj)
                lines.append(f"- `{name}` ({_kind(obj)})" + (f": {summary}" if summary else ""))
        if constants:
            lines.append("- constants: " + ", ".join(f"`{name}`" for name in constants))
        if not rows:
            lines.append("(internal helpers only)")
        lines.append("")
    lines.append(REFERENCE_END)
    return "\n".join(lines)


def write_reference():
    text = INDEX.read_text(encoding="utf-8")
    start, end = text.index(REFERENCE_START), text.index(REFERENCE_END) + len(REFERENCE_END)
    INDEX.write_text(text[:start] + generate_reference() + text[end:], encoding="utf-8")


def test_every_name_in_the_reference_exists():
    text = INDEX.read_text(encoding="utf-8")
    assert REFERENCE_START in text and REFERENCE_END in text, "docs/index.md lost its reference markers"
    section = text[text.index(REFERENCE_START):text.index(REFERENCE_END)]
    missing, module = [], None
    for line in section.splitlines():
        heading = re.match(r"### `([\w.]+)`", line)
        if heading:
            try:
                module = importlib.import_module(heading.group(1))
            except ImportError as err:
                missing.append(f"module {heading.group(1)} ({err})")
                module = None
            continue
        if module is None or not line.startswith("- "):
            continue
        names = re.findall(r"`(\w+)`", line) if line.startswith("- constants:") else re.findall(r"^- `(\w+)`", line)
        missing.extend(f"{module.__name__}.{name}" for name in names if not hasattr(module, name))
    assert not missing, ("docs/index.md's reference names what no longer exists: " + ", ".join(missing)
                         + "\nregenerate it: python tests/test_docs_links.py --write-reference")


if __name__ == "__main__":
    if sys.argv[1:] == ["--write-reference"]:
        sys.path.insert(0, str(REPO))
        write_reference()
        print(f"rewrote the reference in {_rel(INDEX)}")
    else:
        print(generate_reference())
