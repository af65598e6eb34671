"""The runtime: the single-writer main loop, account state and the durable ledger."""
