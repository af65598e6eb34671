"""External Settlement: the gateway as the trading platform's external wallet.

`models` validates the platform's requests, `rules` decides them in the main loop, `service`
turns a request into an operation and its answer, `http` serves the routes, `report` exports the
journal. docs/settlement.md describes the interface.
"""
