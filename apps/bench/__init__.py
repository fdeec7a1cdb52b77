"""``splatfield bench``: measurements written as JSON (raster, train, sfm, viewer).

Each subcommand is a light module (its options and handler); the measuring code it defers to
is the ``*_timing`` module beside it.
"""
