"""Pinhole camera intrinsics: the one place that knows K, distortion and image size.

Conventions follow ROS (sensor_msgs/CameraInfo, depth_image_proc):
- pixel (u, v) = (column, row); u grows right, v grows down;
- a pixel's index is its centre, so back-projection uses ``x = (u - cx) * z / fx``
  exactly like depth_image_proc and open3d;
- points are in the camera's optical frame (REP-103: x right, y down, z forward).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np


@dataclass(frozen=True)
class Intrinsics:
    """Pinhole intrinsics of an image of ``width`` x ``height`` pixels."""

    width: int
    height: int
    fx: float
    fy: float
    cx: float
    cy: float
    distortion_model: str = "plumb_bob"
    D: tuple[float, ...] = field(default_factory=tuple)
    frame_id: str = ""

    @classmethod
    def from_K(
        cls,
        K: np.ndarray | list,
        width: int,
        height: int,
        D: tuple[float, ...] | list | np.ndarray = (),
        distortion_model: str = "plumb_bob",
        frame_id: str = "",
    ) -> Intrinsics:
        K = np.asarray(K, dtype=np.float64).reshape(3, 3)
        return cls(
            width=int(width),
            height=int(height),
            fx=float(K[0, 0]),
            fy=float(K[1, 1]),
            cx=float(K[0, 2]),
            cy=float(K[1, 2]),
            distortion_model=distortion_model,
            D=tuple(float(d) for d in np.asarray(D, dtype=np.float64).ravel()),
            frame_id=frame_id,
        )

    @property
    def K(self) -> np.ndarray:
        return np.array(
            [[self.fx, 0.0, self.cx], [0.0, self.fy, self.cy], [0.0, 0.0, 1.0]], dtype=np.float64
        )

    @property
    def size(self) -> tuple[int, int]:
        """(width, height), the order OpenCV's resize takes."""
        return (self.width, self.height)

    @property
    def is_distorted(self) -> bool:
        return any(d != 0.0 for d in self.D)

    def scaled(self, width: int, height: int) -> Intrinsics:
        """Intrinsics of this image resized to ``width`` x ``height`` (e.g. with cv2.resize).

        Pixel centres map as ``u' + 0.5 = (u + 0.5) * s`` (what cv2.resize and torch's
        ``align_corners=False`` do), so the principal point moves by the half-pixel term too.
        """
        sx = width / self.width
        sy = height / self.height
        return replace(
            self,
            width=int(width),
            height=int(height),
            fx=self.fx * sx,
            fy=self.fy * sy,
            cx=(self.cx + 0.5) * sx - 0.5,
            cy=(self.cy + 0.5) * sy - 0.5,
        )

    def cropped(self, x0: int, y0: int, width: int, height: int) -> Intrinsics:
        """Intrinsics of the crop whose top-left pixel is (x0, y0) in this image."""
        return replace(self, width=int(width), height=int(height), cx=self.cx - x0, cy=self.cy - y0)

    def pixel_grid(self) -> tuple[np.ndarray, np.ndarray]:
        """Float32 (u, v) index grids of shape (height, width)."""
        u = np.arange(self.width, dtype=np.float32)
        v = np.arange(self.height, dtype=np.float32)
        return np.meshgrid(u, v)

    def ray_factors(self) -> tuple[np.ndarray, np.ndarray]:
        """float32 ``(u - cx) / fx`` per column (W,) and ``(v - cy) / fy`` per row (H,):
        a pixel's x and y are these times its depth."""
        u = np.arange(self.width, dtype=np.float32)
        v = np.arange(self.height, dtype=np.float32)
        return (
            (u - np.float32(self.cx)) * np.float32(1.0 / self.fx),
            (v - np.float32(self.cy)) * np.float32(1.0 / self.fy),
        )

    def backproject(self, depth: np.ndarray) -> np.ndarray:
        """Depth in metres (H, W) -> points (H, W, 3) float32; NaN where depth is not valid.

        Valid means finite and > 0, as depth_image_proc treats 32FC1 depth.
        """
        depth = np.asarray(depth, dtype=np.float32)
        if depth.shape != (self.height, self.width):
            raise ValueError(
                f"depth is {depth.shape[1]}x{depth.shape[0]} but the intrinsics are for "
                f"{self.width}x{self.height}"
            )
        z = np.where(np.isfinite(depth) & (depth > 0), depth, np.float32(np.nan))
        x_factor, y_factor = self.ray_factors()
        points = np.empty((self.height, self.width, 3), dtype=np.float32)
        np.multiply(x_factor[None, :], z, out=points[..., 0])
        np.multiply(y_factor[:, None], z, out=points[..., 1])
        points[..., 2] = z
        return points

    def backproject_pixels(self, uv: np.ndarray, depth: np.ndarray) -> np.ndarray:
        """Pixels (N, 2) (sub-pixel allowed) with depths (N,) -> points (N, 3) float64."""
        uv = np.asarray(uv, dtype=np.float64).reshape(-1, 2)
        z = np.asarray(depth, dtype=np.float64).reshape(-1)
        return np.stack(
            [(uv[:, 0] - self.cx) * z / self.fx, (uv[:, 1] - self.cy) * z / self.fy, z], axis=1
        )

    def sample_depth(self, depth: np.ndarray, uv: np.ndarray) -> np.ndarray:
        """Depth (N,) at pixels (N, 2) of a depth image: the pixel containing each position
        (nearest pixel centre); NaN outside the image or where the depth is invalid."""
        uv = np.asarray(uv, dtype=np.float64).reshape(-1, 2)
        col = np.floor(uv[:, 0] + 0.5)
        row = np.floor(uv[:, 1] + 0.5)
        inside = (col >= 0) & (col < depth.shape[1]) & (row >= 0) & (row < depth.shape[0])
        out = np.full(uv.shape[0], np.nan, dtype=np.float32)
        values = depth[row[inside].astype(np.intp), col[inside].astype(np.intp)]
        out[inside] = np.where(np.isfinite(values) & (values > 0), values, np.nan)
        return out

    def project(self, points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Points (N, 3) in this camera's optical frame -> (uv (N, 2) float64, z (N,)).

        Points behind the camera (z <= 0) get NaN pixel coordinates.
        """
        points = np.asarray(points, dtype=np.float64).reshape(-1, 3)
        z = points[:, 2]
        with np.errstate(divide="ignore", invalid="ignore"):
            inv_z = np.where(z > 0, 1.0 / z, np.nan)
        uv = np.empty((points.shape[0], 2), dtype=np.float64)
        uv[:, 0] = self.fx * points[:, 0] * inv_z + self.cx
        uv[:, 1] = self.fy * points[:, 1] * inv_z + self.cy
        return uv, z
