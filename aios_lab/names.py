"""Names of datasets, jobs and models: ``^[a-z0-9][a-z0-9._-]{0,63}$``."""

from __future__ import annotations

import re

from .errors import AiosError

NAME_RE = re.compile(r"^[a-z0-9][a-z0-9._-]{0,63}$")


def check_name(name: object, what: str = "name") -> str:
    """Return ``name`` if valid, else raise a one-line error saying what a name may hold."""
    if not isinstance(name, str) or not NAME_RE.fullmatch(name) or ".." in name:
        raise AiosError(
            f"invalid {what} name {name!r}: use 1-64 characters of a-z, 0-9, '.', '_' or '-', "
            "starting with a letter or digit"
        )
    return name
