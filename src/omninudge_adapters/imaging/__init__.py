"""Image and video processing: ``PillowImageProcessor`` (the ``ImageProcessor`` port)
and ``probe_video``. See docs/media.md."""

from omninudge_adapters.imaging.pillow import PillowImageProcessor, make_thumbnail, process_image
from omninudge_adapters.imaging.video import VideoProbe, check_container, probe_video

__all__ = [
    "PillowImageProcessor",
    "VideoProbe",
    "check_container",
    "make_thumbnail",
    "probe_video",
    "process_image",
]
