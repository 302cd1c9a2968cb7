"""``python -m aios_lab.observability --port P [--host H] [--insecure]``: the detached metrics server's process."""

from __future__ import annotations

import argparse
import sys

from .. import config
from ..errors import AiosError
from .server import DEFAULT_HOST, DEFAULT_PORT, run


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m aios_lab.observability", description=__doc__)
    parser.add_argument("--port", type=int, default=DEFAULT_PORT)
    parser.add_argument("--host", default=DEFAULT_HOST)
    parser.add_argument("--insecure", action="store_true")
    args = parser.parse_args(argv)
    config.private_umask()
    try:
        run(args.port, args.host, insecure=args.insecure, on_ready=lambda url: print(f"serving {url}", flush=True))
    except AiosError as exc:
        print(f"aios metrics serve: {exc}", file=sys.stderr, flush=True)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
