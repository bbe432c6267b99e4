"""Depth registration: re-render a depth image from another camera into the colour camera.

An RGB-D camera's depth usually comes from its own (infrared / stereo) imager: another focal
length, another principal point and a baseline of a few centimetres from the colour imager
(RealSense D435: depth fx ~ 390, colour fx ~ 613, 15 mm apart, both 640x480). Such depth is not
pixel-aligned with the colour image even when both have the same size, and every model that
pairs colour with depth needs it aligned ("registered").

:func:`register_depth` does what depth_image_proc's ``register`` does: back-project every valid
depth pixel with the depth intrinsics, move it into the colour camera with ``colour_T_depth``
and project it with the colour intrinsics, the nearest depth winning where several land on one
pixel (a z-buffer). When the colour camera sees a depth pixel larger than one of its own pixels
(613 / 390 = 1.6x), a single projected point per depth pixel would leave a grid of holes, so each
depth pixel fills every colour pixel whose centre lies in the projection of its square (corners
at u -+ 0.5, v -+ 0.5), as depth_image_proc's ``fill_upsampling_holes`` does; at least the pixel
its centre lands in is always filled. The filled value is the depth of the pixel's centre in the
colour camera.

:func:`registration_needed` tells registered depth from unregistered depth and says why.

Images must be rectified (zero distortion): a distorted image's pixels are not where the pinhole
model puts them, and registering them as if they were would misplace depth by pixels.
"""

from __future__ import annotations

import numpy as np

from depth_perception.core.camera import Intrinsics

__all__ = ["MAX_FOOTPRINT_PX", "register_depth", "registration_needed"]

#: Largest colour-pixel span (per axis) one depth pixel may fill. A depth pixel covers about
#: (colour f / depth f) * (depth z / colour z) colour pixels (1.6 for a D435); only points a few
#: centimetres from the colour camera get larger footprints, and those are clamped to this span
#: around their centre pixel rather than painting a large block with one value.
MAX_FOOTPRINT_PX = 16

# Tolerances of registration_needed: intrinsics equal within 1e-3 px, extrinsic identity within
# 1e-6 (metres for the translation, matrix entries for the rotation).
_K_TOL_PX = 1e-3
_IDENTITY_TOL = 1e-6


def _require_rectified(intr: Intrinsics, which: str) -> None:
    if intr.is_distorted:
        raise ValueError(
            f"the {which} camera has non-zero distortion coefficients {list(intr.D)} "
            f"(model '{intr.distortion_model}'): registration expects rectified images "
            "(image_rect topics, or a camera whose distortion is zero)"
        )


def _as_transform(colour_T_depth: np.ndarray) -> np.ndarray:
    T = np.asarray(colour_T_depth, dtype=np.float64)
    if T.shape != (4, 4):
        raise ValueError(f"colour_T_depth must be a 4x4 matrix, got shape {T.shape}")
    if not np.all(np.isfinite(T)):
        raise ValueError("colour_T_depth has non-finite entries")
    R = T[:3, :3]
    if not np.allclose(R @ R.T, np.eye(3), atol=1e-5) or np.linalg.det(R) <= 0:
        raise ValueError("colour_T_depth's rotation part is not a proper rotation matrix")
    return T


def register_depth(
    depth: np.ndarray,
    depth_intrinsics: Intrinsics,
    colour_intrinsics: Intrinsics,
    colour_T_depth: np.ndarray,
) -> np.ndarray:
    """Depth of the depth camera (H_d, W_d) -> depth in the colour camera (H_c, W_c).

    ``depth``: metres, NaN / non-finite / <= 0 invalid. ``colour_T_depth``: 4x4 rigid
    transform with ``p_colour = colour_T_depth @ p_depth`` (tf2's
    ``lookup_transform(colour_frame, depth_frame)``). Returns float32 metres, NaN where no depth
    pixel lands. Points at or behind the colour camera's image plane are dropped.

    Raises ValueError for distorted intrinsics, a depth image of another size than
    ``depth_intrinsics`` or a transform that is not rigid.
    """
    _require_rectified(depth_intrinsics, "depth")
    _require_rectified(colour_intrinsics, "colour")
    T = _as_transform(colour_T_depth)
    depth = np.asarray(depth)
    if depth.shape != (depth_intrinsics.height, depth_intrinsics.width):
        raise ValueError(
            f"depth has shape {depth.shape} but the depth intrinsics are for "
            f"{depth_intrinsics.width}x{depth_intrinsics.height} "
            f"(shape ({depth_intrinsics.height}, {depth_intrinsics.width}))"
        )
    width, height = colour_intrinsics.width, colour_intrinsics.height
    zbuffer = np.full(height * width, np.inf, dtype=np.float32)

    with np.errstate(invalid="ignore"):
        rows, cols = np.nonzero(np.isfinite(depth) & (depth > 0))
    if rows.size:
        _splat(depth, rows, cols, depth_intrinsics, colour_intrinsics, T, zbuffer)

    zbuffer[np.isinf(zbuffer)] = np.nan
    return zbuffer.reshape(height, width)


def _splat(
    depth: np.ndarray,
    rows: np.ndarray,
    cols: np.ndarray,
    d: Intrinsics,
    c: Intrinsics,
    T: np.ndarray,
    zbuffer: np.ndarray,
) -> None:
    """Z-buffer the footprints of the valid depth pixels (rows, cols) into ``zbuffer``."""
    z = depth[rows, cols].astype(np.float64)
    R, t = T[:3, :3], T[:3, 3]
    # A depth pixel's ray is (a, b, 1) with a = (u - cx) / fx, b = (v - cy) / fy; its point at
    # depth z is z * (a, b, 1), which the transform moves to z * R (a, b, 1) + t. That is linear
    # in a and b, so the centre and the four corners (a -+ 0.5 / fx, b -+ 0.5 / fy) are sums
    # of the same few products.
    a = (cols - d.cx) / d.fx
    b = (rows - d.cy) / d.fy
    base = z[:, None] * (a[:, None] * R[:, 0] + b[:, None] * R[:, 1] + R[:, 2]) + t  # (N, 3)
    step_a = z[:, None] * ((0.5 / d.fx) * R[:, 0])  # (N, 3): half a pixel along u
    step_b = z[:, None] * ((0.5 / d.fy) * R[:, 1])  # half a pixel along v

    zc = base[:, 2]
    keep = zc > 0  # in front of the colour camera
    if not np.all(keep):
        base, step_a, step_b, zc = base[keep], step_a[keep], step_b[keep], zc[keep]
    if zc.size == 0:
        return
    u_centre = c.fx * base[:, 0] / zc + c.cx
    v_centre = c.fy * base[:, 1] / zc + c.cy
    u_pixel = np.floor(u_centre + 0.5)  # the pixel the centre lands in (nearest centre)
    v_pixel = np.floor(v_centre + 0.5)

    # Projected corners: the colour pixels whose centres lie in [min, max) of the corners are
    # covered by this depth pixel's square (its bounding box, when a rotation tilts it).
    u_lo = np.full(zc.shape, np.inf)
    u_hi = np.full(zc.shape, -np.inf)
    v_lo = np.full(zc.shape, np.inf)
    v_hi = np.full(zc.shape, -np.inf)
    corners_ok = np.ones(zc.shape, dtype=bool)
    for sa in (-1.0, 1.0):
        for sb in (-1.0, 1.0):
            corner = base + sa * step_a + sb * step_b
            cz = corner[:, 2]
            corners_ok &= cz > 0
            with np.errstate(divide="ignore", invalid="ignore"):
                cu = c.fx * corner[:, 0] / cz + c.cx
                cv = c.fy * corner[:, 1] / cz + c.cy
            np.minimum(u_lo, cu, out=u_lo)
            np.maximum(u_hi, cu, out=u_hi)
            np.minimum(v_lo, cv, out=v_lo)
            np.maximum(v_hi, cv, out=v_hi)
    with np.errstate(invalid="ignore"):
        col_lo = np.minimum(np.ceil(u_lo), u_pixel)
        col_hi = np.maximum(np.ceil(u_hi) - 1, u_pixel)
        row_lo = np.minimum(np.ceil(v_lo), v_pixel)
        row_hi = np.maximum(np.ceil(v_hi) - 1, v_pixel)
    # A corner behind the camera (a point straddling the image plane): the centre pixel only.
    col_lo = np.where(corners_ok, col_lo, u_pixel)
    col_hi = np.where(corners_ok, col_hi, u_pixel)
    row_lo = np.where(corners_ok, row_lo, v_pixel)
    row_hi = np.where(corners_ok, row_hi, v_pixel)
    half = MAX_FOOTPRINT_PX // 2
    col_lo = np.maximum(col_lo, u_pixel - half)
    col_hi = np.minimum(col_hi, u_pixel + half)
    row_lo = np.maximum(row_lo, v_pixel - half)
    row_hi = np.minimum(row_hi, v_pixel + half)
    # Clip to the image; a footprint entirely outside it is empty.
    col_lo = np.maximum(col_lo, 0)
    row_lo = np.maximum(row_lo, 0)
    col_hi = np.minimum(col_hi, c.width - 1)
    row_hi = np.minimum(row_hi, c.height - 1)
    inside = (col_lo <= col_hi) & (row_lo <= row_hi)
    col_lo = col_lo[inside].astype(np.int64)
    row_lo = row_lo[inside].astype(np.int64)
    n_cols = col_hi[inside].astype(np.int64) - col_lo + 1
    n_rows = row_hi[inside].astype(np.int64) - row_lo + 1
    z_out = zc[inside].astype(np.float32)

    # Expand every footprint into its pixels (one entry per covered pixel), then z-buffer.
    counts = n_cols * n_rows
    owner = np.repeat(np.arange(counts.size), counts)
    local = np.arange(owner.size) - np.repeat(np.cumsum(counts) - counts, counts)
    n_cols_o = n_cols[owner]
    flat = (row_lo[owner] + local // n_cols_o) * c.width + col_lo[owner] + local % n_cols_o
    np.minimum.at(zbuffer, flat, z_out[owner])


def _transform_summary(T: np.ndarray) -> str:
    angle = np.degrees(np.arccos(np.clip((np.trace(T[:3, :3]) - 1.0) / 2.0, -1.0, 1.0)))
    return f"translation {np.linalg.norm(T[:3, 3]) * 1e3:.1f} mm, rotation {angle:.2f} deg"


def registration_needed(
    depth_intrinsics: Intrinsics,
    colour_intrinsics: Intrinsics,
    colour_T_depth: np.ndarray | None = None,
) -> str | None:
    """None when depth with ``depth_intrinsics`` is already registered to the colour camera,
    else a one-line reason naming what differs.

    Registered means: the same image size, the same K (within 1e-3 px) and either an identity
    ``colour_T_depth`` or, when the extrinsic is unknown (None), the same frame_id. Same size with
    different intrinsics is the common trap (a RealSense's raw depth next to its colour image):
    the reason says so.
    """
    d, c = depth_intrinsics, colour_intrinsics
    if (d.width, d.height) != (c.width, c.height):
        return (
            f"depth is {d.width}x{d.height} but colour is {c.width}x{c.height}: the depth is not "
            "registered to the colour camera"
        )
    for name in ("fx", "fy", "cx", "cy"):
        dv, cv = getattr(d, name), getattr(c, name)
        if abs(dv - cv) > _K_TOL_PX:
            return (
                f"depth {name} {dv:.1f} \u2260 colour {name} {cv:.1f} at the same "
                f"{d.width}x{d.height} size: the depth is not registered to the colour camera"
            )
    if colour_T_depth is not None:
        T = np.asarray(colour_T_depth, dtype=np.float64)
        if T.shape != (4, 4):
            raise ValueError(f"colour_T_depth must be a 4x4 matrix, got shape {T.shape}")
        if not np.allclose(T, np.eye(4), rtol=0.0, atol=_IDENTITY_TOL):
            return (
                f"the depth\u2192colour extrinsic is not identity ({_transform_summary(T)}): "
                "the depth is not registered to the colour camera"
            )
        return None
    if d.frame_id != c.frame_id:
        return (
            f"depth frame '{d.frame_id}' \u2260 colour frame '{c.frame_id}' and no extrinsic "
            "between them is known: the depth may not be registered to the colour camera"
        )
    return None
