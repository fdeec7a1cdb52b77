"""splatfield.apps — the `splatfield` command line and the tools behind it (Layer 3)."""
