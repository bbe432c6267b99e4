"""Depth (+ colour) -> point-cloud buffers laid out like depth_image_proc's PointCloud2.

The arrays returned here are numpy structured arrays whose memory *is* the PointCloud2 payload:
the ROS layer only fills in the header and fields and hands ``cloud.tobytes()`` (or a
``memoryview``) to ``PointCloud2.data``. The layouts match depth_image_proc:

- ``XYZ_DTYPE``: x, y, z float32 at offsets 0, 4, 8; point_step 16 (4 bytes padding);
- ``XYZRGB_DTYPE``: the same plus ``rgb`` float32 at offset 16; point_step 32.

The ``rgb`` field follows the PCL convention: the little-endian uint32 ``0x00RRGGBB``
reinterpreted as a float32, i.e. its four bytes in memory are B, G, R, 0. Clouds are organized
(height x width, row-major like the image) with NaN x/y/z where depth is invalid, as
depth_image_proc publishes them; :func:`valid_points` drops those for unorganized consumers.
"""

from __future__ import annotations

import functools

import cv2
import numpy as np

from depth_perception.core.camera import Intrinsics

_F4 = np.dtype("<f4")

XYZ_DTYPE = np.dtype(
    {"names": ["x", "y", "z"], "formats": [_F4] * 3, "offsets": [0, 4, 8], "itemsize": 16}
)
XYZRGB_DTYPE = np.dtype(
    {
        "names": ["x", "y", "z", "rgb"],
        "formats": [_F4] * 4,
        "offsets": [0, 4, 8, 16],
        "itemsize": 32,
    }
)


def _check_rgb(rgb: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    rgb = np.asarray(rgb)
    if rgb.ndim != 3 or rgb.shape[2] != 3:
        raise ValueError(f"colour image must be (H, W, 3) RGB, got shape {rgb.shape}")
    if rgb.shape[:2] != shape:
        raise ValueError(
            f"colour image is {rgb.shape[1]}x{rgb.shape[0]} but depth is {shape[1]}x{shape[0]}; "
            "register/resize the colour image to the depth camera first"
        )
    if rgb.dtype != np.uint8:
        raise ValueError(f"colour image must be uint8, got {rgb.dtype}")
    return rgb


def _bgr0(rgb: np.ndarray) -> np.ndarray:
    """uint8 RGB (..., 3) -> uint32 (...) whose four bytes in memory are B, G, R, 0."""
    shape = rgb.shape[:-1]
    # An image keeps its rows: cvtColor works row by row, and a (N, 1, 3) column of one pixel
    # per row is ten times slower than the same pixels as (H, W, 3).
    image = np.ascontiguousarray(rgb)
    if image.ndim != 3:
        image = image.reshape(-1, 1, 3)
    # cvtColor reorders and widens in one optimized pass (several times faster than numpy's
    # strided byte shuffling); its alpha of 255 is then cleared to the 0 PCL expects.
    bgra = cv2.cvtColor(image, cv2.COLOR_RGB2BGRA)
    bgra[..., 3] = 0
    return bgra.view(np.uint32).reshape(shape)


def _xyz_planes(depth: np.ndarray, intr: Intrinsics) -> list[np.ndarray]:
    """Contiguous float32 x, y, z planes (H, W) of the back-projected depth, NaN where invalid.

    Same arithmetic as ``Intrinsics.backproject`` with per-row / per-column factors.
    """
    if np.shape(depth) != (intr.height, intr.width):
        intr.backproject(depth)  # raises the size-mismatch error
    depth = np.asarray(depth, dtype=np.float32)
    z = np.where(np.isfinite(depth) & (depth > 0), depth, np.float32(np.nan))
    x_factor, y_factor = _ray_factors(intr.width, intr.height, intr.fx, intr.fy, intr.cx, intr.cy)
    return [x_factor * z, y_factor * z, z]


@functools.lru_cache(maxsize=4)
def _zeros(shape: tuple[int, int]) -> np.ndarray:
    """A read-only float32 plane of zeros (the padding words), made once per image size."""
    zero = np.zeros(shape, dtype=np.float32)
    zero.flags.writeable = False
    return zero


@functools.lru_cache(maxsize=8)
def _ray_factors(
    width: int, height: int, fx: float, fy: float, cx: float, cy: float
) -> tuple[np.ndarray, np.ndarray]:
    """``Intrinsics.ray_factors`` as a (1, W) row and an (H, 1) column, computed once per
    camera (a node sees the same intrinsics every frame); read-only, as they are shared."""
    x_factor, y_factor = Intrinsics(width, height, fx=fx, fy=fy, cx=cx, cy=cy).ray_factors()
    x_factor, y_factor = x_factor[None, :], y_factor[:, None]
    x_factor.flags.writeable = y_factor.flags.writeable = False
    return x_factor, y_factor


def _interleave(planes: list[np.ndarray], dtype: np.dtype, out=None) -> np.ndarray:
    """(H, W) 32-bit planes -> (H, W) structured points, one plane per 4-byte word.

    cv2.merge interleaves in one optimized pass (about 3x faster than filling each word of the
    strided buffer with numpy); planes travel as int32 views so every bit is copied unchanged.
    ``out``: a writable buffer of H*W*itemsize bytes to fill instead of a new array (the ROS
    layer passes the message's own data buffer, saving a 10 MB copy and its page faults).
    """
    height, width = planes[0].shape
    shape = (height, width, len(planes))
    if out is None:
        dst = np.empty(shape, dtype=np.int32)
    else:
        dst = np.frombuffer(out, dtype=np.int32)
        if dst.size != np.prod(shape):
            raise ValueError(f"out holds {dst.nbytes} bytes, the cloud needs {4 * np.prod(shape)}")
        dst = dst.reshape(shape)
    cv2.merge([np.ascontiguousarray(p).view(np.int32) for p in planes], dst)
    return dst.view(dtype).reshape(height, width)


def depth_to_xyz(depth: np.ndarray, intr: Intrinsics, out=None) -> np.ndarray:
    """Depth in metres (H, W) -> organized (H, W) ``XYZ_DTYPE`` cloud; NaN points where invalid.

    ``out``: optional writable buffer (H*W*16 bytes) the cloud is written into.
    """
    x, y, z = _xyz_planes(depth, intr)
    zero = _zeros(z.shape)  # padding word: deterministic bytes on the wire
    return _interleave([x, y, z, zero], XYZ_DTYPE, out)


def depth_to_xyzrgb(depth: np.ndarray, rgb: np.ndarray, intr: Intrinsics, out=None) -> np.ndarray:
    """Depth (H, W) metres + uint8 RGB (H, W, 3) -> organized (H, W) ``XYZRGB_DTYPE`` cloud.

    The colour must already be registered to the depth image (same size and pixel grid).
    ``out``: optional writable buffer (H*W*32 bytes) the cloud is written into.
    """
    rgb = _check_rgb(rgb, (intr.height, intr.width))
    x, y, z = _xyz_planes(depth, intr)
    zero = _zeros(z.shape)
    # Bytes 16..19 of each point are B, G, R, 0: one 32-bit word.
    return _interleave([x, y, z, zero, _bgr0(rgb), zero, zero, zero], XYZRGB_DTYPE, out)


def pack_rgb(rgb: np.ndarray) -> np.ndarray:
    """uint8 RGB (..., 3) -> float32 (...) whose bytes are B, G, R, 0 (PCL's packed rgb)."""
    rgb = np.asarray(rgb)
    if rgb.shape[-1:] != (3,) or rgb.dtype != np.uint8:
        raise ValueError(f"expected uint8 (..., 3) RGB, got {rgb.dtype} {rgb.shape}")
    return _bgr0(rgb).view(_F4)


def unpack_rgb(packed: np.ndarray) -> np.ndarray:
    """Packed float32 rgb (...) -> uint8 RGB (..., 3); inverse of :func:`pack_rgb`."""
    # Contiguous little-endian float32 so the byte view is exactly the wire bytes.
    packed = np.ascontiguousarray(packed, dtype=_F4)
    raw = packed.view(np.uint8).reshape(packed.shape + (4,))
    return raw[..., 2::-1].copy()


def valid_points(cloud: np.ndarray) -> np.ndarray:
    """The points of ``cloud`` with finite x, y and z, as a 1-D array in row-major order."""
    keep = np.isfinite(cloud["x"]) & np.isfinite(cloud["y"]) & np.isfinite(cloud["z"])
    return cloud[keep]
