"""The pages in docs/ stay true to the code: every ``npar.xxx.yyy`` they
name exists, every relative link resolves, and every ```python example
runs (each in a fresh namespace)."""

import importlib
import re
from pathlib import Path

import pytest

DOCS = Path(__file__).resolve().parent.parent / "docs"
PAGES = sorted(DOCS.glob("*.md"))

# `npar.ops.conv2d.conv2d_forward`, `npar.gradcheck`, ... inside backticks.
REFERENCE = re.compile(r"`(npar(?:\.[A-Za-z_][A-Za-z0-9_]*)+)(?:\(\))?`")
# [text](target), not images; targets with a scheme are external.
LINK = re.compile(r"(?<!!)\[[^\]]*\]\(([^)\s]+)\)")
EXAMPLE = re.compile(r"^```python\n(.*?)^```", re.S | re.M)


def _page_ids():
    return [page.name for page in PAGES]


def resolve(dotted):
    """Import the longest module prefix of ``dotted`` and getattr the rest."""
    parts = dotted.split(".")
    for cut in range(len(parts), 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:cut]))
        except ModuleNotFoundError:
            continue
        for attribute in parts[cut:]:
            obj = getattr(obj, attribute)
        return obj
    raise ModuleNotFoundError(dotted)


def test_docs_exist():
    names = {page.name for page in PAGES}
    assert {"index.md", "math.md", "exercises.md", "gradcheck.md"} <= names


@pytest.mark.parametrize("page", PAGES, ids=_page_ids())
def test_every_named_function_exists(page):
    names = sorted(set(REFERENCE.findall(page.read_text())))
    missing = []
    for name in names:
        try:
            resolve(name)
        except (ImportError, AttributeError) as error:
            missing.append(f"{name} ({type(error).__name__}: {error})")
    assert not missing, f"{page.name} names what does not exist: {missing}"


@pytest.mark.parametrize("page", PAGES, ids=_page_ids())
def test_every_relative_link_resolves(page):
    broken = []
    for target in LINK.findall(page.read_text()):
        if re.match(r"[a-z]+:", target) or target.startswith("#"):
            continue
        path = (page.parent / target.split("#")[0]).resolve()
        if not path.exists():
            broken.append(target)
    assert not broken, f"{page.name} links to missing files: {broken}"


EXAMPLES = [(page, index, code) for page in PAGES
            for index, code in enumerate(EXAMPLE.findall(page.read_text()))]


@pytest.mark.parametrize("page, index, code", EXAMPLES,
                         ids=[f"{p.name}-{i}" for p, i, _ in EXAMPLES])
def test_python_example_runs(page, index, code, capsys):
    namespace = {"__name__": f"docs_{page.stem}_{index}"}
    exec(compile(code, f"{page.name} example {index}", "exec"), namespace)


def test_the_checker_of_the_docs_can_fail(tmp_path):
    # The reference pattern and the resolver reject a name that does not
    # exist, and the example pattern finds examples.
    text = "see `npar.ops.conv2d.no_such_function` and\n```python\nx = 1\n```\n"
    names = REFERENCE.findall(text)
    assert names == ["npar.ops.conv2d.no_such_function"]
    with pytest.raises(AttributeError):
        resolve(names[0])
    assert EXAMPLE.findall(text) == ["x = 1\n"]
    assert resolve("npar.gradcheck") is resolve("npar.verify.gradcheck.gradcheck")
