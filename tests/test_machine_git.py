"""The dirtiness rule of committed reports: generated outputs (validation/, README.md's findings block) do
not make a tree dirty, any other tracked change does."""
import subprocess

import pytest

from widelimit.studies.machine import git_state


def _git(root, *args):
    subprocess.run(["git", *args], cwd=root, check=True, capture_output=True)


@pytest.fixture
def repo(tmp_path):
    _git(tmp_path, "init", "-q")
    (tmp_path / "validation").mkdir()
    for name in ("validation/quick.md", "README.md", "code.py"):
        (tmp_path / name).write_text("a\n")
    _git(tmp_path, "add", ".")
    _git(tmp_path, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "init")
    return tmp_path


def test_generated_outputs_are_not_dirty(repo):
    (repo / "validation/quick.md").write_text("b\n")
    (repo / "README.md").write_text("b\n")
    g = git_state(repo)
    assert g.commit is not None and not g.dirty
    assert g.describe().endswith("(clean)")


def test_code_change_is_dirty(repo):
    (repo / "code.py").write_text("b\n")
    g = git_state(repo)
    assert g.dirty and "uncommitted" in g.describe()
