"""Video in and out: ``stylize apply clip.mp4 out.mp4`` with the sound kept, resumable, frame-exact.

One entry point, :func:`transcode`, runs every frame of a video through a :class:`FrameProcessor` and writes the
result with the source's audio and subtitles; :func:`probe` describes a video file. The modules, one idea each:

- ``probe``: open a file, pick its video stream, :class:`VideoInfo`
- ``colour``, ``orientation``: the YUV<->RGB matrix and range; the display matrix as pixel transposes and flips
- ``decode``: upright RGB ``(3, H, W)`` uint8 frames with their exact timestamps
- ``encode``: a fresh encoder per segment, deterministic, into a packet file (``packets``)
- ``workdir``: the work folder that makes a run resumable (manifest, segments, processor states)
- ``remux``: the segments and the source's other streams joined into the output, written atomically (``atomic``)
- ``worker``: decoding and encoding threads behind bounded queues
- ``settings``: the options checked and resolved into an output plan

PyAV is an optional dependency: importing this package works without it, and :func:`transcode` and :func:`probe` then
raise a StylizeError that gives the install command.
"""

from __future__ import annotations

from stylize.video.backend import INSTALL_COMMAND
from stylize.video.probe import StreamInfo, VideoInfo, probe
from stylize.video.transcode import FrameProcessor, ProgressCallback, VideoResult, transcode

__all__ = ["INSTALL_COMMAND", "FrameProcessor", "ProgressCallback", "StreamInfo", "VideoInfo", "VideoResult", "probe", "transcode"]
