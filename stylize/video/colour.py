"""Which YUV<->RGB matrix and range a stream uses, and how the output is tagged.

Decoded video is YUV; the network wants RGB. Getting the matrix (BT.601, BT.709, BT.2020) or the range (limited 16-235
or full 0-255) wrong shifts every colour, so both are resolved once per clip and passed to swscale explicitly rather
than left to PyAV's defaults: PyAV 18 follows each frame's tags and falls back to BT.601 limited, which is wrong for an
untagged HD clip, and older PyAV ignored the tags altogether. An untagged matrix is guessed from the frame size as
players do (mpv, browsers): BT.709 from 1280 wide or 577 high, BT.601 below. Encoding uses the same matrix and range and
tags the output with them, so players invert exactly the conversion that was made; primaries and transfer are only
tags (no pixel conversion happens) and are copied as they are.

Values are FFmpeg's enums: ``AVColorSpace``, ``AVColorRange``, ``AVColorPrimaries``, ``AVColorTransferCharacteristic``.
"""

from __future__ import annotations

from dataclasses import dataclass

UNSPECIFIED = 2  # the same value in the AVColorSpace, AVColorPrimaries and AVColorTransferCharacteristic enums
RANGE_LIMITED = 1  # AVCOL_RANGE_MPEG: luma 16-235, chroma 16-240
RANGE_FULL = 2  # AVCOL_RANGE_JPEG: 0-255
BT709 = 1
SMPTE170M = 6  # BT.601 (525 lines); the tag we write for a guessed BT.601 matrix

# AVColorSpace -> swscale's SWS_CS_* (PyAV's av.video.reformatter.Colorspace): the matrices swscale implements.
_SWS_COLORSPACE = {1: 1, 4: 4, 5: 5, 6: 5, 7: 7, 9: 9, 10: 9}
_MATRIX_NAMES = {0: "rgb", 1: "bt709", 4: "fcc", 5: "bt470bg", 6: "smpte170m", 7: "smpte240m", 9: "bt2020nc", 10: "bt2020c"}


@dataclass(frozen=True)
class Colour:
    """The colour properties of a stream as used for conversion, and the tags the output gets."""

    matrix: int  # AVColorSpace of the YUV<->RGB conversion; never unspecified (guessed when untagged)
    range: int  # RANGE_LIMITED or RANGE_FULL
    primaries: int = UNSPECIFIED  # AVColorPrimaries, as tagged; copied to the output
    transfer: int = UNSPECIFIED  # AVColorTransferCharacteristic, as tagged; copied to the output
    guessed: bool = False  # the source did not tag its matrix or range, so they were guessed

    @property
    def sws_colorspace(self) -> int:
        """The matrix as swscale's colorspace constant (for ``reformat(src_colorspace=..., dst_colorspace=...)``)."""
        return _SWS_COLORSPACE[self.matrix]

    def describe(self) -> str:
        name = _MATRIX_NAMES.get(self.matrix, str(self.matrix))
        text = f"{name}, {'full' if self.range == RANGE_FULL else 'limited'} range"
        return text + (" (guessed: untagged)" if self.guessed else "")


def resolve_colour(
    matrix: int | None, colour_range: int | None, primaries: int | None, transfer: int | None, *, pix_fmt: str, is_rgb: bool, width: int, height: int
) -> Colour:
    """The :class:`Colour` of a stream from its tags (None or 2 when absent), pixel format and coded size.

    An RGB source (``is_rgb``: gbrp, rgb24, ...) needs no matrix to decode; it gets the size-based one for encoding.
    """
    tagged_matrix = matrix in _SWS_COLORSPACE
    if not tagged_matrix:  # untagged, RGB, YCgCo, ICtCp...: no YUV matrix swscale implements
        matrix = BT709 if width >= 1280 or height > 576 else SMPTE170M
    tagged_range = colour_range in (RANGE_LIMITED, RANGE_FULL)
    if is_rgb:
        colour_range = RANGE_FULL
    elif not tagged_range:
        # yuvj* is FFmpeg's name for full-range YUV (JPEG-style streams: MJPEG, some phone and webcam clips).
        colour_range = RANGE_FULL if pix_fmt.startswith("yuvj") else RANGE_LIMITED
    return Colour(
        matrix=int(matrix),  # type: ignore[arg-type]
        range=int(colour_range),  # type: ignore[arg-type]
        primaries=primaries if primaries is not None else UNSPECIFIED,
        transfer=transfer if transfer is not None else UNSPECIFIED,
        guessed=not is_rgb and (not tagged_matrix or not (tagged_range or pix_fmt.startswith("yuvj"))),
    )
