"""The ledger engines behind the runtime's storage seam: embedded SQLite (the default) and its
schema, and `ledger verify`."""
