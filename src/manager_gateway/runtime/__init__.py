"""The runtime: the single-writer main loop, account state and the storage seam it uses."""
