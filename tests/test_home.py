"""The declared home (pyproject's [project.urls] Source) and what derives from it: Colab badges, install lines."""

import shutil

import pytest

from tools.home import ROOT, Home, disagreements, notebooks, read_home, retarget


def test_badges_and_install_lines_agree_with_the_declared_home():
    home = read_home()
    assert home == Home("unetlab/unetlab", "main")
    assert disagreements() == []
    # No tag or other branch hides anywhere: the first cell installs the branch the badge opens.
    for path in notebooks():
        assert "@v0.1.0" not in path.read_text(encoding="utf-8")


@pytest.fixture
def checkout(tmp_path):
    """A copy of the files the home reaches: pyproject.toml, README.md and the notebooks."""
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, tmp_path / name)
    shutil.copytree(ROOT / "notebooks", tmp_path / "notebooks", ignore=shutil.ignore_patterns("data", "runs"))
    return tmp_path


def test_a_fork_retargets_with_one_command(checkout):
    before = {p.name: p.read_text(encoding="utf-8").splitlines() for p in notebooks(checkout)}
    home = retarget(checkout, repo="someone/unetlab-fork", branch="classroom")
    assert home == read_home(checkout) == Home("someone/unetlab-fork", "classroom")
    assert disagreements(checkout) == []
    assert 'Source = "https://github.com/someone/unetlab-fork/tree/classroom"' in (
        checkout / "pyproject.toml").read_text()
    readme = (checkout / "README.md").read_text()
    assert "colab.research.google.com/github/someone/unetlab-fork/blob/classroom/notebooks/02_inspect_masks" in readme
    assert "github/unetlab/unetlab/" not in readme
    for path in notebooks(checkout):  # one line changed in each notebook, nothing else
        after = path.read_text(encoding="utf-8").splitlines()
        changed = [(a, b) for a, b in zip(before[path.name], after) if a != b]
        assert len(after) == len(before[path.name]) and len(changed) == 1
        assert 'git+https://github.com/someone/unetlab-fork@classroom' in changed[0][1]


def test_disagreements_are_named(checkout):
    readme = checkout / "README.md"
    readme.write_text(readme.read_text().replace("blob/main/notebooks/04_train", "blob/dev/notebooks/04_train"))
    nb = checkout / "notebooks" / "05_evaluate.ipynb"
    nb.write_text(nb.read_text().replace("unetlab/unetlab@main", "unetlab/unetlab@v0.1.0"))
    problems = disagreements(checkout)
    assert len(problems) == 3, problems  # 04's badge missing, a badge on another branch, 05's install line
    assert any("no Colab badge opening" in p and "04_train" in p for p in problems)
    assert any("blob/dev/notebooks/04_train" in p for p in problems)
    assert any(p.startswith("05_evaluate.ipynb: the first code cell") for p in problems)


def test_bad_homes_are_refused(checkout):
    with pytest.raises(ValueError, match="owner/name"):
        retarget(checkout, repo="not a repo")
    project = checkout / "pyproject.toml"
    project.write_text(project.read_text().replace("/tree/main", ""))
    with pytest.raises(ValueError, match=r"Source = \"https://github.com/OWNER/NAME/tree/BRANCH\""):
        read_home(checkout)
