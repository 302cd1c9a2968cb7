"""``python -m aios_lab.serve [--port 8500] [--host 127.0.0.1] ...``: the server in the foreground."""

import sys

from .process import main

if __name__ == "__main__":
    sys.exit(main())
