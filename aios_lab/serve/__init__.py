"""The V2 (Open Inference Protocol) inference server: dynamic batching, hot swap, tokens, metrics.

>>> import aios_lab as aios
>>> ep = aios.serve()                 # starts ``python -m aios_lab.serve`` detached, if not running
>>> ep.url, ep.token_file             # 'http://127.0.0.1:8500', AIOS_HOME/serve/token
>>> aios.endpoints()                  # what the catalog records
"""

from .auth import create_token, default_token
from .process import Endpoint, build_app, endpoints, serve

__all__ = ["serve", "endpoints", "Endpoint", "create_token", "default_token", "build_app"]
