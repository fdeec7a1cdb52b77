"""What ``splatfield sfm`` and ``bench sfm`` share: the SfM choices they offer, mirrors of
:data:`splatfield.data.sfm.SfmMatcher` and ``SfmCameraModel`` (checked by the tests), since
importing ``splatfield.data`` would import torch while the command line is parsed."""

from typing import Literal

SfmMatcherName = Literal["auto", "exhaustive", "sequential", "retrieval"]
SfmCameraModelName = Literal["SIMPLE_PINHOLE", "PINHOLE", "SIMPLE_RADIAL", "RADIAL", "OPENCV", "OPENCV_FISHEYE"]
