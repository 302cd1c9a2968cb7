"""The jupyter_server extension behind the JupyterLab sidebar: REST routes under ``/aios/api/``.

Enabled on install by ``jupyter-config/server-config/aios_lab.json``; by hand:
``jupyter server extension enable aios_lab.jupyter_ext``.

Routes (all behind Jupyter's authentication; POSTs also behind its XSRF check)::

    GET  /aios/api/overview                  jobs, devices + queue + cluster, models, endpoints, datasets, sweeps
    GET  /aios/api/jobs | devices | models | endpoints | datasets | sweeps
    GET  /aios/api/sweeps/NAME               the sweep's JSON (trials, curves) and its chart (as the widget draws it)
    GET  /aios/api/compare?jobs=A,B,C        aios.compare(A, B, C).to_json() and its charts by step
    GET  /aios/api/jobs/NAME                 the job's JSON model plus its checkpoints
    GET  /aios/api/jobs/NAME/metrics?since=N metric rows with step > N
    GET  /aios/api/jobs/NAME/charts          the job's charts as HTML+SVG (aios_lab.charts, as the widget draws them)
    GET  /aios/api/jobs/NAME/log?tail=N      the last N lines of the worker's log
    POST /aios/api/jobs/NAME/cancel          checkpoint, then stop
    POST /aios/api/jobs/NAME/resume          body {"steps": S} (optional)
    GET  /aios/api/metrics                   jobs, devices and the queue for Prometheus (aios_lab.observability)
    POST /aios/api/chat                      body {"model", "messages", ...}: the endpoint's chat reply as SSE; the
                                             extension holds the (infer, one-model) token (see .chat)

JSON GETs carry an ETag and answer 304 to a matching ``If-None-Match``. Errors answer ``{"message", "error"}``
with the status of :func:`aios_lab.errors.http_status` (404 unknown job, 409 conflict, 400 invalid).
"""

from __future__ import annotations

from typing import Any


def _jupyter_server_extension_points() -> list[dict[str, str]]:
    return [{"module": "aios_lab.jupyter_ext"}]


def _load_jupyter_server_extension(server_app: Any) -> None:
    from .handlers import routes

    web_app = server_app.web_app
    web_app.add_handlers(".*$", routes(web_app.settings["base_url"]))
    server_app.log.info("aios_lab: sidebar API at %saios/api/", web_app.settings["base_url"])


# the pre-2.0 name, still looked up by some tools
load_jupyter_server_extension = _load_jupyter_server_extension
