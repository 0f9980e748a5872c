"""The README and the docs pages cannot rot: the site builds strictly, every relative link and image exists,
the generated sections are what ``python -m genvae.results tables`` renders, and every marked example runs.

How examples are marked and run is explained in docs/development.md ("Documentation that cannot rot").
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml
from markdown.extensions.toc import slugify

from genvae.results.figures import figure_groups
from genvae.results.render import build_sections, marker_names, page_sections, pages, replace_marked_sections

from .conftest import REPO, write_fake_mnist
from .test_evaluation_cli import quick_overlay

PAGES = pages(REPO)
FENCE = re.compile(r"^(`{3,}|~{3,})\s*([\w+-]*)")
MARK = re.compile(r"^<!--\s*(runnable|skip:\s*(?P<reason>.+?))\s*-->\s*$")
LANGUAGES = {
    "bash": "bash",
    "sh": "bash",
    "shell": "bash",
    "console": "bash",
    "python": "python",
    "py": "python",
}
# test-size trainer overrides appended to every example's genvae command (docs/development.md)
FIT_OVERRIDES = "--trainer.max_epochs=1 --trainer.limit_train_batches=2 --trainer.limit_val_batches=1"
CPU_OVERRIDES = "--trainer.accelerator=cpu --trainer.enable_progress_bar=false"
EDIT_OVERRIDES = "--rounds=1 --calibration_images=16"
GENVAE_FUNCTION = f"""genvae() {{
  case "${{1:-}}" in
    fit) command genvae "$@" {FIT_OVERRIDES} {CPU_OVERRIDES} ;;
    validate|test|predict) command genvae "$@" {CPU_OVERRIDES} ;;
    edit) command genvae "$@" {EDIT_OVERRIDES} ;;
    *) command genvae "$@" ;;
  esac
}}
"""


def relative(page: Path) -> str:
    return page.relative_to(REPO).as_posix()


@dataclass(frozen=True)
class Block:
    """A fenced code block of a page: its language, code, first line and marker (None when unmarked)."""

    page: Path
    line: int
    language: str
    code: str
    mark: str | None
    reason: str | None

    @property
    def name(self) -> str:
        return f"{relative(self.page)}:{self.line}"


def code_blocks(page: Path) -> list[Block]:
    """Every fenced block of ``page``, with the ``<!-- runnable -->`` / ``<!-- skip: ... -->`` marker on the
    nearest non-blank line above its fence."""
    lines = page.read_text().splitlines()
    blocks, i = [], 0
    while i < len(lines):
        match = FENCE.match(lines[i])
        if not match:
            i += 1
            continue
        fence, language, start = match.group(1), match.group(2).lower(), i
        end = next((j for j in range(i + 1, len(lines)) if lines[j].startswith(fence)), len(lines))
        above = next((lines[j] for j in range(start - 1, -1, -1) if lines[j].strip()), "")
        mark = MARK.match(above.strip())
        blocks.append(
            Block(
                page,
                start + 1,
                language,
                "\n".join(lines[start + 1 : end]) + "\n",
                mark.group(1).split(":")[0] if mark else None,
                mark.group("reason") if mark else None,
            )
        )
        i = end + 1
    return blocks


BLOCKS = [block for page in PAGES for block in code_blocks(page)]
EXAMPLES = [block for block in BLOCKS if block.language in LANGUAGES]


def test_every_example_is_marked_runnable_or_skipped() -> None:
    unmarked = [block.name for block in EXAMPLES if block.mark is None]
    assert not unmarked, f"mark these blocks <!-- runnable --> or <!-- skip: REASON -->: {unmarked}"
    assert any(block.mark == "runnable" for block in EXAMPLES)


@pytest.fixture(scope="module")
def workdirs(tmp_path_factory: pytest.TempPathFactory) -> dict[Path, Path]:
    """One working folder per page, made on first use: tiny MNIST in data/, a test-size experiments/."""
    return {}


def workdir_for(page: Path, workdirs: dict[Path, Path], factory: pytest.TempPathFactory) -> Path:
    if page not in workdirs:
        work = factory.mktemp(re.sub(r"\W", "_", relative(page)))
        write_fake_mnist(work / "data")
        shutil.copytree(REPO / "experiments", work / "experiments")
        overlay = yaml.safe_load(quick_overlay(work).read_text())
        for callback in overlay["trainer"]["callbacks"]:  # fewer physical edits and grid rows as well
            if callback["class_path"].endswith(".AttributeControlEvaluation"):
                callback["init_args"] |= {"physical_images": 8, "grid_rows": 2}
        (work / "experiments" / "eval" / "vae_family.yaml").write_text(yaml.safe_dump(overlay))
        workdirs[page] = work
    return workdirs[page]


def example_env() -> dict[str, str]:
    env = dict(os.environ)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH")) if p)
    env["MPLBACKEND"] = "Agg"
    env.setdefault("WANDB_MODE", "disabled")
    return env


@pytest.mark.parametrize("block", EXAMPLES, ids=lambda block: block.name)
def test_example(block: Block, workdirs: dict[Path, Path], tmp_path_factory: pytest.TempPathFactory) -> None:
    """Run one marked example in its page's working folder (runnable blocks of a page run in order)."""
    if block.mark != "runnable":
        pytest.skip(f"{block.name}: {block.reason or 'not marked runnable'}")
    work = workdir_for(block.page, workdirs, tmp_path_factory)
    if LANGUAGES[block.language] == "python":
        script = work / f"example_{block.line}.py"
        script.write_text(block.code)
        command = [sys.executable, str(script)]
    else:
        python = f'python() {{ command "{sys.executable}" "$@"; }}\n'
        command = ["bash", "-euo", "pipefail", "-c", GENVAE_FUNCTION + python + block.code]
    result = subprocess.run(command, cwd=work, env=example_env(), capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, (
        f"{block.name} failed:\n{block.code}\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    )


def test_the_docs_build_strictly(tmp_path: Path) -> None:
    """``mkdocs build --strict`` (as ``make docs``): a broken link, anchor, nav entry or API page fails."""
    env = {**example_env(), "NO_MKDOCS_2_WARNING": "1"}
    # not --quiet: it hides the API pages' docstring warnings from --strict as well
    command = [sys.executable, "-m", "mkdocs", "build", "--strict", "-f", str(REPO / "mkdocs.yml")]
    result = subprocess.run(
        [*command, "-d", str(tmp_path / "site")],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert (tmp_path / "site" / "api" / "models" / "index.html").is_file()


LINK = re.compile(r"!?\[(?:[^\]\[]|\[[^\]]*\])*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")


def prose(page: Path) -> str:
    """The page without its fenced code blocks and inline code (links there are examples, not links)."""
    text = page.read_text()
    for block in code_blocks(page):
        text = text.replace(block.code, "\n")
    return re.sub(r"`[^`\n]*`", "", text)


def anchors(page: Path) -> set[str]:
    """The ids MkDocs gives the headings of ``page`` (Python-Markdown's toc slugify)."""
    headings = re.findall(r"^#{1,6}\s+(.+?)\s*#*\s*$", prose(page), re.M)
    return {slugify(heading, "-") for heading in headings}


@pytest.mark.parametrize("page", PAGES, ids=relative)
def test_relative_links_and_images_exist(page: Path) -> None:
    broken = []
    for target in LINK.findall(prose(page)):
        if re.match(r"^[a-z][a-z0-9+.-]*:", target):  # http:, https:, mailto:
            continue
        path, _, anchor = target.partition("#")
        linked = (page.parent / path).resolve() if path else page
        if not linked.exists():
            broken.append(f"{target}: no such file")
        elif anchor and linked.suffix == ".md" and anchor not in anchors(linked):
            broken.append(f"{target}: no heading #{anchor} in {linked.name}")
    assert not broken, f"{relative(page)}: {broken}"


def test_link_checker_finds_links_images_and_anchors(tmp_path: Path) -> None:
    """The checker itself: links, images and anchors in prose are seen, those in code are not."""
    page = tmp_path / "page.md"
    page.write_text(
        "# Weights & Biases\n\n![a figure](figures/x.png) and [a page](other.md#part-two) and "
        "`[code](not-a-link.md)`\n\n```bash\necho [x](inside-code.md)\n```\n"
    )
    (tmp_path / "other.md").write_text("# Part two\n")
    assert LINK.findall(prose(page)) == ["figures/x.png", "other.md#part-two"]
    assert anchors(page) == {"weights-biases"} and anchors(tmp_path / "other.md") == {"part-two"}


def test_generated_sections_are_current() -> None:
    """The marked sections of README.md and docs/ are what ``python -m genvae.results tables`` renders from
    the committed results/runs and results/bench (re-run it after a change), and name known sections."""
    _, sections = build_sections(REPO / "results")
    figures = figure_groups(REPO / "results" / "runs")
    stale, unknown = [], []
    for page in PAGES:
        text = page.read_text()
        rendered = page_sections(page, REPO, sections, figures)
        unknown += [f"{relative(page)}: {name}" for name in marker_names(text) if name not in rendered]
        if replace_marked_sections(text, rendered) != text:
            stale.append(relative(page))
    assert not unknown, f"markers no renderer knows: {unknown}"
    assert not stale, f"run `python -m genvae.results tables`: stale sections in {stale}"
    readme = (REPO / "README.md").read_text()
    assert {"headline", "speed-summary"} <= set(marker_names(readme))
