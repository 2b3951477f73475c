"""The control plane's store: tables, engines, migrations and queue operations (the only place that writes SQL).

Workers use ``services.store.queue`` (its docstring lists the API); the API uses the per-resource
modules (``projects``, ``files``, ``jobs``).
"""
