"""splatfield.data — dataset loaders (Layer 3). The loaders arrive with the trainer (issue #3)."""
