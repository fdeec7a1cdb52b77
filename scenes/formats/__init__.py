"""splatfield.scenes.formats — reading and writing splat files (FORMATS.md).

Implemented so far: the INRIA 3DGS ``.ply`` (:func:`read_ply`, :func:`write_ply`).
"""

from splatfield.scenes.formats.ply import PlyError, ply_property_names, read_ply, write_ply

__all__ = ["PlyError", "ply_property_names", "read_ply", "write_ply"]
