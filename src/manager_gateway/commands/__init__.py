"""Command handlers, one module per family, registered in one table (`registry.COMMANDS`)."""
