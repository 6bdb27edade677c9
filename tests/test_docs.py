"""The README and the documentation site: the README stays short and every command in it that
is marked runnable runs; the generated reference is up to date and lists every key; the site
builds with `mkdocs build --strict` and renders in a headless browser."""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import ROOT
from zoo import docs

README = ROOT / "README.md"
MARK = "<!-- runnable -->"
BLOCK = re.compile(r"^" + re.escape(MARK) + r"\n```(\w+)\n(.*?)^```", re.M | re.S)


def runnable_blocks(text: str) -> list[tuple[str, str]]:
    """(language, body) of each fenced block right after a `<!-- runnable -->` line."""
    return [(m[1], m[2]) for m in BLOCK.finditer(text)]


def test_readme_is_short_and_links_into_the_docs():
    text = README.read_text(encoding="utf-8")
    assert len(text.splitlines()) <= 160 and len(text.encode()) <= 10 * 1024
    for page in ("docs/data.md", "docs/reference/recipe.md", "docs/getting-started.md"):
        assert f"]({page}" in text and (ROOT / page).exists(), page
    assert 'python -m pytest -m "not slow"' in text
    assert text.count(MARK) == len(runnable_blocks(text)) >= 2   # every mark is on a block


def test_readme_test_command_is_what_ci_runs():
    readme = README.read_text(encoding="utf-8")
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8")
    assert 'pip install -e ".[test]"' in readme and 'pip install -q -e ".[test]"' in ci
    command = re.search(r"\.venv/bin/python (-m pytest[^\n`]*)", readme)[1].strip()
    assert f"python {command}" in ci


def test_generated_reference_is_up_to_date_and_lists_every_key():
    assert docs.main(["--check"]) == 0, "run `python -m zoo.docs` and commit docs/reference/"
    page = (ROOT / docs.PAGES["recipe"]).read_text(encoding="utf-8")
    listed = set(re.findall(r"^\| `([^`]+)` \|", page, re.M))
    assert listed == docs.all_recipe_keys()
    for key in ("data.carry_state", "train.time_budget", "sweep.scheduler", "data.text_column"):
        assert key in listed
    from zoo.registry import list_models, model_info
    from zoo.schema import keys

    builders = (ROOT / docs.PAGES["builders"]).read_text(encoding="utf-8")
    for name in list_models():
        section = builders.split(f"\n## {name}\n", 1)[1].split("\n## ", 1)[0]
        assert set(re.findall(r"^\| `([^`]+)` \|", section, re.M)) == \
            {k.key for k in keys(model_info(name).schema)}, name


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Path:
    """The site built once with `mkdocs build --strict` (a broken link or anchor fails it)."""
    out = tmp_path_factory.mktemp("site")
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}
    done = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "-q", "-d", str(out)],
                          cwd=ROOT, capture_output=True, text=True, timeout=120, env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    return out


@pytest.mark.slow
def test_site_builds_strict(site):
    for page in ("index.html", "reference/recipe/index.html", "benchmarks/index.html",
                 "data/index.html"):
        assert (site / page).exists(), page
    assert "data.carry_state" in (site / "reference/recipe/index.html").read_text()


@pytest.mark.slow
def test_readme_runnable_commands_pass(store, tmp_path, capsys):
    """Every command in a runnable block, as written, in a fresh store (the recipes and the
    README copied beside it): `zoo` lines through zoo's own entry point, Python blocks run."""
    from zoo.cli import main

    shutil.copytree(ROOT / "recipes", tmp_path / "recipes")
    shutil.copy(README, tmp_path / "README.md")
    blocks = runnable_blocks(README.read_text(encoding="utf-8"))
    ran = []
    for lang, body in blocks:
        if lang == "python":
            exec(compile(body, "<README.md python block>", "exec"), {})   # noqa: S102 (the README's own code)
            ran.append("python")
            continue
        assert lang == "bash", lang
        for line in body.splitlines():
            argv = shlex.split(line, comments=True)
            if not argv:
                continue
            assert argv[0] == "zoo", f"a runnable line runs zoo only: {line}"
            start = time.monotonic()
            rc = main(argv[1:])
            out = capsys.readouterr()
            with capsys.disabled():
                print(f"\n{time.monotonic() - start:6.1f} s  {line[:70]}")
            assert rc == 0, f"{line}\n{out.err[-2000:]}"
            ran.append(argv[1])
    assert {"run", "predict", "generate", "python", "models", "recipes"} <= set(ran)


def _chromium() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.mark.slow
@pytest.mark.skipif(_chromium() is None, reason="chromium is not installed (.ci/run installs it)")
def test_site_renders_in_chromium(site, tmp_path):
    """The home page, the recipe reference and the benchmarks page, in headless Chromium: the
    DOM holds their tables and plot, and each screenshot is a rendered page, not a blank one."""
    from PIL import Image

    pages = {"home": ("index.html", 1, 1000), "reference": ("reference/recipe/index.html", 10, 1000),
             "benchmarks": ("benchmarks/index.html", 2, 2600)}   # tall enough to show the plot
    for name, (page, tables, height) in pages.items():
        url = (site / page).as_uri()
        base = [_chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
                "--virtual-time-budget=5000"]
        dom = subprocess.run([*base, "--dump-dom", url], capture_output=True, text=True,
                             timeout=120).stdout
        assert dom.count("<table") >= tables, (name, dom[:500])
        if name == "benchmarks":
            src = re.search(r'<img[^>]+src="([^"]+vs_torch\.png)"', dom)[1]
            assert (site / page).parent.joinpath(src).resolve().is_file()
        shot = tmp_path / f"{name}.png"
        subprocess.run([*base, f"--screenshot={shot}", f"--window-size=1400,{height}", url],
                       capture_output=True, timeout=120)
        image = Image.open(shot).convert("RGB")
        colours = image.getcolors(maxcolors=1 << 20)
        assert image.size == (1400, height) and len(colours) > 50, name   # text, tables, a header
