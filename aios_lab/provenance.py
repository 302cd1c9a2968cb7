"""Where a job came from: the git commit and dirty state of the repository holding the notebook or script
that launched it, that notebook's (or script's) path, and the sha256 of the launching cell.

Read-only and quick: ``git`` is run as a subprocess with a short timeout and without taking optional locks
(``GIT_OPTIONAL_LOCKS=0``: ``git status`` then never rewrites the index); no repository, no git, or a git
that fails records ``"git": None``. In a kernel the notebook path comes from the Jupyter session
(``JPY_SESSION_NAME``, which jupyter_server sets, or ``__session__`` in the user namespace, which ipykernel
sets from it); in a script from ``sys.argv[0]``. The cell is IPython's current cell, when there is one.

>>> aios_lab.provenance.capture()
{'notebook': '/home/me/work/digits.ipynb', 'script': None, 'cell_sha256': '3f2a...', 'cwd': '/home/me/work',
 'git': {'root': '/home/me/work', 'commit': '9c1e...', 'branch': 'main', 'dirty': True, 'changes': 2}}
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from collections.abc import Mapping
from typing import Any

GIT_TIMEOUT_S = 2.0


def capture(user_ns: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The provenance of the code running now (see the module's docstring); never raises."""
    shell = _shell()
    ns = user_ns if user_ns is not None else (shell.user_ns if shell is not None else {})
    notebook = _notebook(ns)
    script = None if notebook or shell is not None else _script()
    launcher = notebook or script
    return {
        "notebook": notebook,
        "script": script,
        "cell_sha256": _cell_hash(shell),
        "cwd": os.getcwd(),
        "git": repo_state(os.path.dirname(launcher) if launcher else os.getcwd(), launcher),
    }


def repo_state(directory: str, launcher: str | None = None) -> dict[str, Any] | None:
    """``{"root", "commit", "branch", "dirty", "changes"}`` of the git work tree holding ``directory``, or None.

    ``dirty``: tracked files differ from the commit, or the ``launcher`` file itself is not committed as is
    (untracked or modified), so the commit alone would not reproduce what ran."""
    root = _git(directory, "rev-parse", "--show-toplevel")
    if root is None:
        return None
    commit = _git(root, "rev-parse", "--verify", "--quiet", "HEAD")  # None in a repository with no commit yet
    branch = _git(root, "symbolic-ref", "--quiet", "--short", "HEAD")
    status = _git(root, "status", "--porcelain=v1", "--untracked-files=no")
    changes = len(status.splitlines()) if status else 0
    dirty = status is None or changes > 0
    if launcher and not dirty:
        tracked = _git(root, "ls-files", "--error-unmatch", "--", os.path.abspath(launcher)) is not None
        dirty = not tracked
    return {"root": root, "commit": commit, "branch": branch, "dirty": bool(dirty), "changes": changes}


def _git(cwd: str, *args: str) -> str | None:
    env = {**os.environ, "GIT_OPTIONAL_LOCKS": "0", "GIT_TERMINAL_PROMPT": "0", "LC_ALL": "C"}
    try:
        out = subprocess.run(
            ["git", "-C", cwd, *args], capture_output=True, text=True, timeout=GIT_TIMEOUT_S, env=env, check=False
        )
    except (OSError, subprocess.SubprocessError):  # no git, no such folder, or too slow
        return None
    return out.stdout.strip() if out.returncode == 0 else None


def _shell() -> Any:
    """The running IPython shell, if this process has one (IPython is never imported here)."""
    if "IPython" not in sys.modules:
        return None
    try:
        from IPython import get_ipython

        return get_ipython()
    except Exception:
        return None


def _notebook(ns: Mapping[str, Any]) -> str | None:
    """The launching notebook's path from the Jupyter session, made absolute where it can be found."""
    path = os.environ.get("JPY_SESSION_NAME") or ns.get("__session__")
    if not isinstance(path, str) or not path.strip():
        return None
    if os.path.isabs(path):
        return path
    for candidate in (path, os.path.basename(path)):  # the kernel runs in the notebook's folder
        if os.path.isfile(candidate):
            return os.path.abspath(candidate)
    return path


def _script() -> str | None:
    """``sys.argv[0]`` when it names a file (not ``-c``, a REPL or a kernel launcher)."""
    arg = sys.argv[0] if sys.argv else ""
    if not arg or arg in ("-c", "-m") or "ipykernel" in arg or not os.path.isfile(arg):
        return None
    return os.path.abspath(arg)


def _cell_hash(shell: Any) -> str | None:
    """sha256 of IPython's current cell (the newest input, stored before the cell runs), or None."""
    try:
        cells = shell.history_manager.input_hist_raw if shell is not None else None
    except AttributeError:
        return None
    if not cells or not isinstance(cells[-1], str) or not cells[-1].strip():
        return None
    return hashlib.sha256(cells[-1].encode()).hexdigest()


__all__ = ["capture", "repo_state", "GIT_TIMEOUT_S"]
