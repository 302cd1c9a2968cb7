"""Language models on the serving endpoint: OpenAI-compatible routes, Triton's generate extension, and an
engine that batches decode steps across requests over a fixed set of KV-cache slots.

Modules, one job each: ``model`` (what a version is made of), ``params`` (request parameters, checked),
``engine`` (continuous batching in its own thread), ``group`` (a request's sequences and their updates),
``submit`` (the steps every route shares), ``openai_routes`` and ``generate_routes`` (the handlers), ``sse``
(token streams over ASGI, disconnects), ``metrics`` (``aios_llm:*`` and the status row), ``openapi``,
``errors``. See docs/architecture.md.

>>> from openai import OpenAI
>>> client = OpenAI(base_url="http://127.0.0.1:8500/v1", api_key=token)
>>> for chunk in client.chat.completions.create(model="chat", messages=[...], stream=True): ...
"""
