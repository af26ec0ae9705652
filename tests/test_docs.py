"""The docs run: every Python and shell example of README.md, docs/ and the
docstrings' `Example:` sections, and every internal link resolves.

An example marked `<!-- not run: REASON -->` on the line before its fence is
skipped, and must give its reason. Shell examples run with `bash -e` in a
temporary folder; `pip install` lines are skipped there, since the suite runs
in the installed package. The mkdocs build (`.ci/run`) checks docs/'s links
again with `--strict`.
"""

import ast
import os
import re
import subprocess
import sys

import pytest
from conftest import REPO

FENCE = re.compile(r"(?ms)^```(python|bash)\n(.*?)^```$")
NOT_RUN = re.compile(r"<!-- not run: (.*?) -->\s*$")
PAGES = [
    "README.md",
    *sorted(f"docs/{f}" for f in os.listdir(os.path.join(REPO, "docs")) if f.endswith(".md")),
]
ENV = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}


def _examples(text):
    """(language, code, reason-not-run or None) of each fenced block."""
    found = []
    for match in FENCE.finditer(text):
        before = text[: match.start()].rstrip("\n").rsplit("\n", 1)[-1]
        marked = NOT_RUN.search(before)
        found.append((match.group(1), match.group(2), marked.group(1) if marked else None))
    return found


def _docstring_examples():
    found = {}
    for root, _, names in os.walk(os.path.join(REPO, "keras_vae")):
        for name in names:
            if name.endswith(".py"):
                path = os.path.join(root, name)
                tree = ast.parse(open(path).read())
                for node in [tree, *ast.walk(tree)]:
                    if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef)):
                        doc = ast.get_docstring(node, clean=True) or ""
                        if "Example:" in doc:
                            rel = os.path.relpath(path, REPO)
                            found[f"{rel}:{getattr(node, 'name', 'module')}"] = doc
    return found


def test_every_skipped_example_says_why():
    texts = {p: open(os.path.join(REPO, p)).read() for p in PAGES}
    texts.update(_docstring_examples())
    for where, text in texts.items():
        for _, code, reason in _examples(text):
            assert reason is None or len(reason.split()) >= 3, (where, code[:80])
    for where, text in _docstring_examples().items():
        assert any(lang == "python" for lang, _, _ in _examples(text)), where


def _run_python(code, tmp_path):
    done = subprocess.run(
        [sys.executable, "-c", code],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=600,
        env=ENV,
    )
    assert done.returncode == 0, done.stderr[-3000:]


@pytest.mark.slow
@pytest.mark.parametrize("page", PAGES)
def test_the_examples_of_each_page_run(page, tmp_path):
    examples = [e for e in _examples(open(os.path.join(REPO, page)).read()) if e[2] is None]
    python = "\n\n".join(code for language, code, _ in examples if language == "python")
    if python:
        _run_python(python, tmp_path)
    for language, code, _ in examples:
        if language != "bash":
            continue
        lines = [line for line in code.splitlines() if not line.strip().startswith("pip install")]
        done = subprocess.run(
            ["bash", "-e", "-c", "\n".join(lines)],
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=600,
            env=ENV,
        )
        assert done.returncode == 0, (code, done.stdout[-2000:], done.stderr[-3000:])


@pytest.mark.slow
def test_the_docstring_examples_run(tmp_path):
    """Every docstring's example, each in a fresh namespace of one process."""
    codes = [
        code
        for text in _docstring_examples().values()
        for language, code, reason in _examples(text)
        if language == "python" and reason is None
    ]
    assert len(codes) >= 5
    runner = "for code in CODES:\n    exec(compile(code, 'example', 'exec'), {})\n"
    _run_python(f"CODES = {codes!r}\n{runner}", tmp_path)


LINK = re.compile(r"\]\(([^)\s]+)\)")


def test_every_internal_link_of_readme_and_docs_resolves():
    checked = 0
    for page in PAGES:
        text = open(os.path.join(REPO, page)).read()
        for target in LINK.findall(text):
            if re.match(r"[a-z]+://", target) or target.startswith("mailto:"):
                continue
            path, _, anchor = target.partition("#")
            file = (
                os.path.normpath(os.path.join(REPO, os.path.dirname(page), path))
                if path
                else os.path.join(REPO, page)
            )
            assert os.path.exists(file), f"{page}: {target}"
            if anchor and file.endswith(".md"):
                headings = re.findall(r"(?m)^#+ (.*)$", open(file).read())
                slugs = {
                    re.sub(r"[^\w\- ]", "", h).strip().lower().replace(" ", "-") for h in headings
                }
                assert anchor in slugs, f"{page}: {target} (anchors: {sorted(slugs)})"
            checked += 1
    assert checked > 20


def test_the_training_page_lists_every_flag():
    import dataclasses

    from keras_vae.config import TrainConfig

    text = open(os.path.join(REPO, "docs", "training.md")).read()
    for f in dataclasses.fields(TrainConfig):
        assert f"`--{f.name.replace('_', '-')}`" in text, f.name


def test_the_readme_fits_on_a_screen_and_ci_runs_its_test_command():
    readme = open(os.path.join(REPO, "README.md")).read()
    assert len(readme.splitlines()) <= 200
    command = re.search(r"```bash\n(pip install -e '\.\[test\]'.*)\n```", readme).group(1)
    assert command in open(os.path.join(REPO, ".ci", "run")).read()
    assert not re.search(r"\b[0-9a-f]{7,40}\b", re.sub(r"```.*?```", "", readme, flags=re.S))
