"""Load generation and measurement for the manager-API gateway (and any server of its protocol).

`client` is the protocol client, `checks` judges every answer against its request, `histogram`
records latencies, `loadgen` runs closed- and open-loop load (`python -m gateway_bench.loadgen`),
and `plot` draws the results.
"""
