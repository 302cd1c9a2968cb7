"""The V2 (Open Inference Protocol) inference server: dynamic batching, hot swap, tokens, metrics; and for
language models the OpenAI routes (``/v1/chat/completions``...) and the generate extension, with continuous
batching (:mod:`.llm`).

>>> import aios_lab as aios
>>> ep = aios.serve()                 # starts ``python -m aios_lab.serve`` detached, if not running
>>> ep.url, ep.token_file             # 'http://127.0.0.1:8500', AIOS_HOME/serve/token
>>> aios.endpoints()                  # what the catalog records, with each endpoint's published status
>>> from aios_lab.serve import create_token, tokens, revoke_token, stop
>>> create_token("infer", expires="30d"); stop(port=8500)
"""

from .auth import Token, create_token, default_token, revoke_token, tokens
from .control import Endpoint, endpoints, serve, stop
from .process import build_app
from .settings import ServeSettings

__all__ = [
    "serve",
    "stop",
    "endpoints",
    "Endpoint",
    "ServeSettings",
    "create_token",
    "tokens",
    "revoke_token",
    "Token",
    "default_token",
    "build_app",
]
