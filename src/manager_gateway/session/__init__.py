"""Sessions: tokens, session types, group masks and who may run what."""
