"""asyncio transport glue: the listening server, connections, event fan-out, shutdown."""
