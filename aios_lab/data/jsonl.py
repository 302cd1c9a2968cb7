"""``jsonl:PATH`` records for language-model datasets, checked against their ``--format`` line by line.

One JSON object per line (blank lines skipped):

* ``text``: ``{"text": "..."}``
* ``completion``: ``{"prompt": "...", "completion": "..."}``
* ``chat``: ``{"messages": [{"role": "user", "content": "..."}, {"role": "assistant", ...}, ...]}``
"""

from __future__ import annotations

import glob as globlib
import json
import os
from typing import Any

from ..errors import InvalidInput
from . import remote

FORMATS = ("text", "completion", "chat")
EXAMPLES = {
    "text": '{"text": "..."}',
    "completion": '{"prompt": "...", "completion": "..."}',
    "chat": '{"messages": [{"role": "user", "content": "..."}, {"role": "assistant", "content": "..."}]}',
}


def check_format(fmt: str | None) -> str:
    if fmt not in FORMATS:
        raise InvalidInput(f"--format {fmt}: use one of {', '.join(FORMATS)} (each line like {EXAMPLES['chat']})")
    return fmt


def files(pattern: str) -> list[Any]:
    """The files ``jsonl:PATTERN`` names (a path or a glob), sorted: local paths, or ``remote.RemoteFile``s for an
    fsspec URL such as ``s3://``."""
    if remote.is_url(pattern):
        found = remote.glob(pattern)
    else:
        found = sorted(p for p in globlib.glob(os.path.expanduser(pattern), recursive=True) if os.path.isfile(p))
    if not found:
        raise InvalidInput(f"no file matches jsonl:{pattern}; check the path (e.g. jsonl:data/chats.jsonl)")
    return found


def read(pattern: str, fmt: str) -> list[dict[str, Any]]:
    """Every record of the files, each checked for ``fmt``; a bad line is a one-line InvalidInput naming it."""
    check_format(fmt)
    out = []
    for path in files(pattern):
        name = os.path.basename(str(path))
        opened = (
            path.open_text() if isinstance(path, remote.RemoteFile) else open(path, encoding="utf-8", errors="strict")
        )
        with opened as f:
            try:
                for number, line in enumerate(f, 1):
                    if not line.strip():
                        continue
                    try:
                        record = json.loads(line)
                    except ValueError as exc:
                        raise InvalidInput(f"line {number} of {name} is not JSON ({exc.args[0]})") from None
                    out.append(_check(record, fmt, f"line {number} of {name}"))
            except UnicodeDecodeError:
                raise InvalidInput(f"{name} is not UTF-8 text; save it as UTF-8 JSON lines") from None
    if not out:
        raise InvalidInput(f"jsonl:{pattern} holds no records; write one JSON object per line, e.g. {EXAMPLES[fmt]}")
    return out


def _check(record: Any, fmt: str, where: str) -> dict[str, Any]:
    hint = f"--format {fmt} needs {EXAMPLES[fmt]}"
    if not isinstance(record, dict):
        raise InvalidInput(f"{where} is a {type(record).__name__}, not an object; {hint}")
    keys = {"text": ("text",), "completion": ("prompt", "completion"), "chat": ("messages",)}[fmt]
    for key in keys:
        if key not in record:
            raise InvalidInput(f"{where} has no {key!r}; {hint}")
    if fmt != "chat":
        for key in keys:
            if not isinstance(record[key], str):
                raise InvalidInput(f"{where}: {key!r} must be a string; {hint}")
        return {k: record[k] for k in keys}
    messages = record["messages"]
    if not isinstance(messages, list) or not messages:
        raise InvalidInput(f"{where}: 'messages' must be a non-empty list; {hint}")
    for i, m in enumerate(messages):
        if not isinstance(m, dict) or not isinstance(m.get("role"), str) or not isinstance(m.get("content"), str):
            raise InvalidInput(f"{where}: message {i} needs a string 'role' and 'content'; {hint}")
    return {"messages": messages}


__all__ = ["FORMATS", "check_format", "read", "files"]
