"""The node's HTTP face inside ``serve`` (``http:`` in the configuration): ``/health/live``,
``/health/ready``, ``/metrics`` (Prometheus) and the web console, served by uvicorn in a thread
of ``serve``.

``health.py``: the readiness checks. ``metrics.py``: the Prometheus collector, which reads the
database at scrape time. ``app.py``: the FastAPI application. ``console.py``: the web
console's routes (``templates/``, ``static/``), with ``images.py`` (its PNGs) and
``series_cache.py`` (a series' images kept while a person chooses an input curve).
``access.py``: who may use the console (``http.auth``) and its audit trail; ``sign_in.py``:
``/login`` and ``/logout``; ``users.py``: the users file (argon2 hashes).
``server.py``: uvicorn in a background thread, on a socket bound before anything else
starts. ``probe.py``: the client ``ctp-node status`` asks. Importing this package imports
none of them (``status`` needs only ``probe.py``, which needs no web framework).
"""
