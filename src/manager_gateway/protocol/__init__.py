"""The wire protocol: framing, envelopes, errors, money and command models. No I/O, no asyncio."""
