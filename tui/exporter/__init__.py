"""`morgue metrics`: the DLQ and the cluster as Prometheus metrics.

``readings`` reads Redis and keeps the cluster snapshot fresh, ``collector`` turns one reading
into metric families, ``server`` serves them over HTTP with ``/healthz``. Nothing here imports
textual.
"""
