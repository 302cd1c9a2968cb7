"""The ``aios`` command: the same verbs as ``%aios``, printed as text."""

from __future__ import annotations

import sys

from IPython.core.error import UsageError


def main(argv: list[str] | None = None) -> int:
    from .verbs import Context, run_argv

    argv = sys.argv[1:] if argv is None else argv
    try:
        result = run_argv(argv or ["help"], Context(interactive=False))
    except UsageError as exc:
        print(f"aios: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    if result is not None:
        text = getattr(result, "cli_text", None)
        print(text() if callable(text) else result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
