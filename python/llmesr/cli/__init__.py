"""Command-line entry points (`llmesr-prepare`, ...)."""
