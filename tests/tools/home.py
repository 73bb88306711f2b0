"""The project's one declared home, and the places that name it: the README's Colab badges and every chapter's
Colab install line.

``pyproject.toml`` declares the home once, in ``[project.urls]``: ``Source`` is the GitHub repository and branch
the notebooks are published from (``https://github.com/OWNER/NAME/tree/BRANCH``). A Colab badge opens a chapter
on that branch, and the chapter's first cell installs the package from that same branch, so the code a notebook
calls is the code it was written for. This script derives both from the home and rewrites them;
``tests/test_home.py`` fails when they disagree.

    python tests/tools/home.py                                # rewrite badges and install lines from pyproject
    python tests/tools/home.py --repo you/unetlab --branch main   # a fork: move the home, then rewrite
    python tests/tools/home.py --check                        # list what disagrees, exit 1 if anything does

(``make retarget REPO=you/unetlab [BRANCH=...]`` runs the second form.) Only the standard library is used, and
notebooks are written exactly as nbformat writes them, so a rewrite changes nothing but the lines it targets.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path
from typing import NamedTuple

ROOT = Path(__file__).resolve().parents[2]
SOURCE = re.compile(r'^Source = "https://github\.com/(?P<repo>[\w.-]+/[\w.-]+)/tree/(?P<branch>[^"\s]+)"$', re.M)
BADGE = re.compile(r"https://colab\.research\.google\.com/github/[\w.-]+/[\w.-]+/blob/[^/\s]+/notebooks/"
                   r"(?P<name>[\w.-]+\.ipynb)")
INSTALL = re.compile(r'%pip install -q "unetlab @ git\+https://github\.com/[^"@]+(@[^"]*)?"')
NAME = re.compile(r"^[\w.-]+/[\w.-]+$")


class Home(NamedTuple):
    """Where the notebooks are published: ``repo`` ("owner/name" on GitHub) and ``branch``."""

    repo: str
    branch: str

    def badge(self, notebook: str) -> str:
        """The URL a Colab badge opens for ``notebook`` (a file name in ``notebooks/``)."""
        return f"https://colab.research.google.com/github/{self.repo}/blob/{self.branch}/notebooks/{notebook}"

    def install(self) -> str:
        """The first cell's pip line: the package from the branch the badge opened."""
        return f'%pip install -q "unetlab @ git+https://github.com/{self.repo}@{self.branch}"'


def read_home(root: Path = ROOT) -> Home:
    """The home ``pyproject.toml`` declares; ValueError when its ``Source`` URL is missing or not a tree URL."""
    match = SOURCE.search((root / "pyproject.toml").read_text(encoding="utf-8"))
    if match is None:
        raise ValueError(f"{root / 'pyproject.toml'}: [project.urls] needs a line "
                         f'Source = "https://github.com/OWNER/NAME/tree/BRANCH"')
    return Home(match["repo"], match["branch"])


def notebooks(root: Path = ROOT) -> list[Path]:
    """The chapters, in order."""
    return sorted((root / "notebooks").glob("[0-9][0-9]_*.ipynb"))


def _first_code_cell(nb: dict) -> dict:
    return next(cell for cell in nb["cells"] if cell["cell_type"] == "code")


def _write_notebook(path: Path, nb: dict) -> None:
    """Write ``nb`` the way nbformat does (sorted keys, indent 1, UTF-8, final newline)."""
    path.write_text(json.dumps(nb, sort_keys=True, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")


def disagreements(root: Path = ROOT) -> list[str]:
    """Every place that does not match the declared home, one line each (empty when all agree)."""
    home = read_home(root)
    problems = []
    readme = (root / "README.md").read_text(encoding="utf-8")
    badges = [match[0] for match in BADGE.finditer(readme)]
    for path in notebooks(root):
        if home.badge(path.name) not in badges:
            problems.append(f"README.md: no Colab badge opening {home.badge(path.name)}")
        source = "".join(_first_code_cell(json.loads(path.read_text(encoding="utf-8")))["source"])
        if home.install() not in (line.strip() for line in source.splitlines()):
            problems.append(f"{path.name}: the first code cell does not run {home.install()}")
    names = {p.name for p in notebooks(root)}
    for match in BADGE.finditer(readme):
        if match["name"] not in names or match[0] != home.badge(match["name"]):
            problems.append(f"README.md: a Colab badge opens {match[0]}, not a chapter on {home.repo}@{home.branch}")
    return problems


def retarget(root: Path = ROOT, repo: str | None = None, branch: str | None = None) -> Home:
    """Move the home to ``repo``/``branch`` (None keeps the declared one), then rewrite the badges and install
    lines from it. Returns the home."""
    home = read_home(root)
    if repo is not None and not NAME.match(repo):
        raise ValueError(f"repo must look like owner/name; got {repo!r}")
    if branch is not None and not re.fullmatch(r"[^\s\"@]+", branch):
        raise ValueError(f"branch must be a git branch or tag name; got {branch!r}")
    home = Home(repo or home.repo, branch or home.branch)
    project = root / "pyproject.toml"
    project.write_text(SOURCE.sub(f'Source = "https://github.com/{home.repo}/tree/{home.branch}"',
                                  project.read_text(encoding="utf-8")), encoding="utf-8")
    readme = root / "README.md"
    readme.write_text(BADGE.sub(lambda m: home.badge(m["name"]), readme.read_text(encoding="utf-8")),
                      encoding="utf-8")
    for path in notebooks(root):
        nb = json.loads(path.read_text(encoding="utf-8"))
        cell = _first_code_cell(nb)
        rewritten = [INSTALL.sub(lambda _: home.install(), line) for line in cell["source"]]
        if rewritten != cell["source"]:
            cell["source"] = rewritten
            _write_notebook(path, nb)
    return home


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repo", help="owner/name of the GitHub repository the notebooks are published from")
    parser.add_argument("--branch", help="the branch (or an existing tag) the badges open and the notebooks install")
    parser.add_argument("--check", action="store_true", help="change nothing; list what disagrees with the home")
    args = parser.parse_args(argv)
    if args.check:
        problems = disagreements()
        print("\n".join(problems) or f"badges and install lines agree with {read_home()}")
        return 1 if problems else 0
    home = retarget(repo=args.repo, branch=args.branch)
    problems = disagreements()
    print("\n".join(problems) or f"home: https://github.com/{home.repo}/tree/{home.branch}; README badges and "
                                 f"the first cell of {len(notebooks())} notebooks follow it")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
