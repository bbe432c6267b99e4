"""Input frames a node cannot use, the same way in every node.

- :class:`FrameRejected`: the error that drops a frame, naming the faulty input (its ``kind``);
- :func:`check_image_size`: an image's size checked against ``max_input_pixels`` before it is
  decoded (a compressed one from its headers, never decompressed when oversized);
- :class:`DroppedFrames`: the count of dropped frames, in all and by kind, each drop an ERROR on
  /diagnostics with a log line throttled per kind.
"""

from __future__ import annotations

from typing import Any

from depth_perception.ros.conversions import compressed_image_size, is_compressed_image
from depth_perception.ros.diagnostics import DiagnosticsReporter

#: A compressed image larger than this many bytes per allowed pixel is rejected undecoded (JPEG
#: and PNG of 8-bit RGB stay well below 8 bytes per pixel even on noise).
MAX_COMPRESSED_BYTES_PER_PIXEL = 8


class FrameRejected(ValueError):
    """A frame that cannot be processed; ``kind`` names the faulty input."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind


def check_image_size(msg: Any, what: str, max_pixels: int) -> tuple[int, int]:
    """(width, height) of an Image or CompressedImage, before decoding; an empty image or one
    beyond ``max_pixels`` (the node's ``max_input_pixels``) raises FrameRejected(``what``).

    A CompressedImage's size is read from its PNG / JPEG / RVL headers, after its byte count is
    checked against ``MAX_COMPRESSED_BYTES_PER_PIXEL``: an oversized image is never decompressed
    (a small PNG can claim gigapixels)."""
    if is_compressed_image(msg):
        size = len(msg.data)
        limit = max_pixels * MAX_COMPRESSED_BYTES_PER_PIXEL
        if size > limit:
            raise FrameRejected(
                what,
                f"compressed {what} image has {size} bytes, more than {limit} "
                f"({MAX_COMPRESSED_BYTES_PER_PIXEL} per pixel of max_input_pixels)",
            )
        try:
            width, height = compressed_image_size(msg)
        except ValueError as exc:
            raise FrameRejected(what, f"{what} image: {exc}") from None
    else:
        width, height = int(msg.width), int(msg.height)
    if width <= 0 or height <= 0:
        raise FrameRejected(what, f"{what} image is {width}x{height}")
    if width * height > max_pixels:
        raise FrameRejected(
            what,
            f"{what} image is {width}x{height} = {width * height} pixels, more than "
            f"max_input_pixels = {max_pixels}",
        )
    return width, height


class DroppedFrames:
    """Counts the frames a node dropped and reports each drop on its diagnostics."""

    def __init__(self, diagnostics: DiagnosticsReporter) -> None:
        self._diagnostics = diagnostics
        self.total = 0
        self.by_kind: dict[str, int] = {}

    def report(self, kind: str, message: str, **values: Any) -> None:
        """One more frame dropped for ``kind``: an ERROR with ``message``, the node's ``values``
        and the counts (``input_errors``, ``errors_<kind>`` per kind seen)."""
        self.total += 1
        self.by_kind[kind] = self.by_kind.get(kind, 0) + 1
        self._diagnostics.error(
            message,
            kind=kind,
            **values,
            input_errors=self.total,
            **{f"errors_{k}": n for k, n in self.by_kind.items()},
        )
