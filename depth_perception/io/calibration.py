"""Camera intrinsics + static extrinsics in one human-editable YAML file.

The format is documented in ``calibration/README.md`` (with a full example). In short::

    version: 1
    cameras:
      - name: color
        frame_id: camera_color_optical_frame
        width: 640
        height: 480
        distortion_model: plumb_bob
        K: [[fx, 0, cx], [0, fy, cy], [0, 0, 1]]
        D: [k1, k2, p1, p2, k3]
    extrinsics:
      - parent: base_link
        child: camera_link
        translation: [x, y, z]          # metres: the child's origin in the parent frame
        rotation: [qx, qy, qz, qw]      # unit quaternion, ROS (geometry_msgs) order
        matrix: [[...4x4...]]           # parent_T_child, the same transform for humans

An extrinsic is ``parent_T_child``, the transform tf2 publishes with ``header.frame_id =
parent`` and ``child_frame_id = child``: it maps a point expressed in the child frame into the
parent frame, ``p_parent = T @ p_child``. The translation + quaternion are authoritative; the
matrix is written for people reading the file and, when present on load, must agree with them
(it catches a file where only one of the two was edited). An entry with only a ``matrix`` is
accepted too.
"""

from __future__ import annotations

import threading
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import transforms3d.quaternions as tq
import yaml

from depth_perception.core.camera import Intrinsics

FORMAT_VERSION = 1
# Tolerance when checking a file's 4x4 matrix against its quaternion + translation: the file
# stores decimals, so this only has to catch real edits, not rounding.
_MATRIX_ATOL = 1e-5


def quaternion_to_matrix(translation: np.ndarray, quat_xyzw: np.ndarray) -> np.ndarray:
    """(t, q) with q = (x, y, z, w) in ROS order -> 4x4 homogeneous transform."""
    q = np.asarray(quat_xyzw, dtype=np.float64)
    T = np.eye(4)
    # transforms3d takes (w, x, y, z) and normalises nothing, so normalise here.
    T[:3, :3] = tq.quat2mat(np.array([q[3], q[0], q[1], q[2]]) / np.linalg.norm(q))
    T[:3, 3] = np.asarray(translation, dtype=np.float64)
    return T


def matrix_to_quaternion(T: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """4x4 rigid transform -> (translation (3,), quaternion (x, y, z, w) with w >= 0)."""
    T = np.asarray(T, dtype=np.float64)
    R = T[:3, :3]
    if not np.allclose(R @ R.T, np.eye(3), atol=1e-6) or np.linalg.det(R) < 0:
        raise ValueError("the rotation part is not a proper rotation matrix")
    w, x, y, z = tq.mat2quat(R)
    q = np.array([x, y, z, w])
    # Snap float dust (1e-17 from the matrix-to-quaternion algebra) to exact zeros so that
    # axis-aligned mounts read cleanly in the YAML file.
    q[np.abs(q) < 1e-12] = 0.0
    # q and -q are the same rotation; fix the sign so files (and tests) are reproducible.
    if q[3] < 0:
        q = -q
    # "+ 0.0" turns -0.0 into 0.0 (same value, cleaner file).
    return T[:3, 3] + 0.0, q / np.linalg.norm(q) + 0.0


def invert_transform(T: np.ndarray) -> np.ndarray:
    """Inverse of a rigid 4x4 transform (R^T, -R^T t), exact for orthonormal R."""
    T = np.asarray(T, dtype=np.float64)
    out = np.eye(4)
    out[:3, :3] = T[:3, :3].T
    out[:3, 3] = -T[:3, :3].T @ T[:3, 3]
    return out


@dataclass(frozen=True)
class Extrinsic:
    """A static transform ``parent_T_child`` (child frame -> parent frame)."""

    parent: str
    child: str
    translation: tuple[float, float, float]
    rotation: tuple[float, float, float, float]  # (x, y, z, w), ROS order

    def __post_init__(self) -> None:
        # Store plain float tuples whatever was passed (lists, numpy arrays, ints), so equality
        # and YAML output do not depend on the caller's types.
        t = tuple(float(v) for v in np.asarray(self.translation, dtype=np.float64).ravel())
        q = tuple(float(v) for v in np.asarray(self.rotation, dtype=np.float64).ravel())
        if len(t) != 3 or len(q) != 4:
            raise ValueError(f"extrinsic {self.parent} -> {self.child}: need 3 + 4 values")
        object.__setattr__(self, "translation", t)
        object.__setattr__(self, "rotation", q)

    @classmethod
    def from_matrix(cls, parent: str, child: str, T: np.ndarray) -> Extrinsic:
        t, q = matrix_to_quaternion(T)
        return cls(parent, child, tuple(t), tuple(q))

    @property
    def matrix(self) -> np.ndarray:
        """4x4 float64 ``parent_T_child``."""
        return quaternion_to_matrix(np.array(self.translation), np.array(self.rotation))


@dataclass
class Calibration:
    """Cameras by name plus a tree of static extrinsics (one parent per frame, as in tf2)."""

    cameras: dict[str, Intrinsics] = field(default_factory=dict)
    extrinsics: list[Extrinsic] = field(default_factory=list)

    def __post_init__(self) -> None:
        parents: dict[str, str] = {}
        for e in self.extrinsics:
            if e.parent == e.child:
                raise ValueError(f"extrinsic from '{e.parent}' to itself")
            if e.child in parents:
                # tf2 rejects a frame with two parents; so do we, to keep lookups unambiguous.
                raise ValueError(
                    f"frame '{e.child}' has two parents: '{parents[e.child]}' and '{e.parent}'"
                )
            parents[e.child] = e.parent
        # A cycle means some frame is its own ancestor.
        for start in parents:
            seen, frame = {start}, start
            while frame in parents:
                frame = parents[frame]
                if frame in seen:
                    raise ValueError(f"the extrinsics contain a cycle through '{frame}'")
                seen.add(frame)

    @property
    def frames(self) -> set[str]:
        """Every frame named by an extrinsic."""
        return {e.parent for e in self.extrinsics} | {e.child for e in self.extrinsics}

    def camera(self, name: str) -> Intrinsics:
        if name not in self.cameras:
            raise KeyError(f"no camera '{name}'; cameras are {sorted(self.cameras)}")
        return self.cameras[name]

    def transform(self, parent: str, child: str) -> np.ndarray:
        """4x4 ``parent_T_child`` chained through the tree (edges may be walked backwards).

        Like tf2's ``lookup_transform(target_frame=parent, source_frame=child)``: the result
        maps points in ``child`` into ``parent``. Raises ``KeyError`` if the two frames are not
        connected.
        """
        if parent == child:
            return np.eye(4)
        # Undirected adjacency: walking an edge child->parent multiplies by parent_T_child,
        # walking it the other way by its inverse.
        neighbours: dict[str, list[tuple[str, np.ndarray]]] = {}
        for e in self.extrinsics:
            T = e.matrix
            neighbours.setdefault(e.parent, []).append((e.child, T))
            neighbours.setdefault(e.child, []).append((e.parent, invert_transform(T)))
        if parent not in neighbours or child not in neighbours:
            missing = parent if parent not in neighbours else child
            raise KeyError(f"frame '{missing}' is not in the calibration")
        # Breadth-first from parent; acc[f] = parent_T_f.
        acc = {parent: np.eye(4)}
        queue = deque([parent])
        while queue:
            frame = queue.popleft()
            for nxt, frame_T_nxt in neighbours[frame]:
                if nxt not in acc:
                    acc[nxt] = acc[frame] @ frame_T_nxt
                    if nxt == child:
                        return acc[nxt]
                    queue.append(nxt)
        raise KeyError(f"frames '{parent}' and '{child}' are not connected")


class StaticTransforms:
    """A static-transform buffer (what tf2's buffer keeps of ``/tf_static``), without tf2_ros.

    Fed by a calibration file's extrinsics or by ``/tf_static`` messages (one
    ``parent_T_child`` per child frame: a newer transform of a child replaces the older one, as
    in tf2), looked up through :meth:`Calibration.transform`. Thread-safe: a node's
    ``/tf_static`` callback may add transforms while its worker looks them up.
    """

    def __init__(self, extrinsics: list[Extrinsic] | tuple = (), source: str = "/tf_static"):
        self.source = source  # where the transforms come from, for messages
        self._lock = threading.Lock()
        self._by_child: dict[str, Extrinsic] = {}
        self._calibration = Calibration()
        self._cache: dict[tuple[str, str], np.ndarray] = {}
        for e in extrinsics:
            self.set_transform(e)

    @classmethod
    def from_calibration(cls, calibration: Calibration, source: str) -> StaticTransforms:
        return cls(calibration.extrinsics, source=source)

    def set_transform(self, extrinsic: Extrinsic) -> bool:
        """Add or replace the transform of ``extrinsic.child``; False if it was already so.

        One that would close a cycle (or names its own parent) raises ValueError and changes
        nothing."""
        with self._lock:
            if self._by_child.get(extrinsic.child) == extrinsic:
                return False
            by_child = {**self._by_child, extrinsic.child: extrinsic}
            calibration = Calibration(extrinsics=list(by_child.values()))  # checks the tree
            self._by_child, self._calibration = by_child, calibration
            self._cache.clear()
            return True

    @property
    def frames(self) -> set[str]:
        with self._lock:
            return self._calibration.frames

    def __len__(self) -> int:
        with self._lock:
            return len(self._by_child)

    def lookup(self, target: str, source: str) -> np.ndarray:
        """4x4 ``target_T_source`` (points in ``source`` -> ``target``), as tf2's
        ``lookup_transform(target, source)``; KeyError saying what is missing."""
        with self._lock:
            key = (target, source)
            if key not in self._cache:
                try:
                    self._cache[key] = self._calibration.transform(target, source)
                except KeyError as exc:
                    known = sorted(self._calibration.frames)
                    raise KeyError(
                        f"no transform from '{source}' to '{target}' in {self.source}: "
                        f"{exc.args[0]} (frames known: {', '.join(known) or 'none yet'})"
                    ) from None
            return self._cache[key]


# ---------------------------------------------------------------------------------------------
# YAML
# ---------------------------------------------------------------------------------------------


def _camera_to_dict(name: str, intr: Intrinsics) -> dict:
    return {
        "name": name,
        "frame_id": intr.frame_id,
        "width": intr.width,
        "height": intr.height,
        "distortion_model": intr.distortion_model,
        "K": intr.K.tolist(),
        "D": [float(d) for d in intr.D],
    }


def _camera_from_dict(d: dict) -> tuple[str, Intrinsics]:
    K = np.asarray(d["K"], dtype=np.float64)
    if K.size != 9:
        raise ValueError(f"camera '{d.get('name')}': K must have 9 values, got {K.size}")
    intr = Intrinsics.from_K(
        K.reshape(3, 3),
        width=int(d["width"]),
        height=int(d["height"]),
        D=d.get("D") or (),
        distortion_model=str(d.get("distortion_model", "plumb_bob")),
        frame_id=str(d.get("frame_id", "")),
    )
    return str(d["name"]), intr


def _extrinsic_to_dict(e: Extrinsic) -> dict:
    return {
        "parent": e.parent,
        "child": e.child,
        "translation": list(e.translation),
        "rotation": list(e.rotation),
        "matrix": (np.round(e.matrix, 9) + 0.0).tolist(),
    }


def _extrinsic_from_dict(d: dict) -> Extrinsic:
    parent, child = str(d["parent"]), str(d["child"])
    has_q = "translation" in d and "rotation" in d
    if not has_q and "matrix" not in d:
        raise ValueError(f"extrinsic {parent} -> {child} needs translation + rotation or matrix")
    if has_q:
        t = np.asarray(d["translation"], dtype=np.float64).reshape(3)
        q = np.asarray(d["rotation"], dtype=np.float64).reshape(4)
        norm = float(np.linalg.norm(q))
        if not 0.99 < norm < 1.01:
            # A quaternion far from unit length is a typo, not rounding; refuse to guess.
            raise ValueError(f"extrinsic {parent} -> {child}: |rotation| = {norm:.4f}, not 1")
        # Rescale only what is visibly off unit length: dividing by a norm of 1 +- 1e-16 would
        # flip last bits and break exact save/load round trips.
        if abs(norm - 1.0) > 1e-9:
            q = q / norm
        e = Extrinsic(parent, child, tuple(t), tuple(q))
        if "matrix" in d:
            M = np.asarray(d["matrix"], dtype=np.float64).reshape(4, 4)
            if not np.allclose(M, e.matrix, atol=_MATRIX_ATOL):
                raise ValueError(
                    f"extrinsic {parent} -> {child}: 'matrix' disagrees with translation + "
                    "rotation (edit both, or delete the matrix)"
                )
        return e
    return Extrinsic.from_matrix(parent, child, np.asarray(d["matrix"]).reshape(4, 4))


def calibration_to_dict(cal: Calibration) -> dict:
    return {
        "version": FORMAT_VERSION,
        "cameras": [_camera_to_dict(n, i) for n, i in cal.cameras.items()],
        "extrinsics": [_extrinsic_to_dict(e) for e in cal.extrinsics],
    }


def calibration_from_dict(d: dict) -> Calibration:
    version = int(d.get("version", FORMAT_VERSION))
    if version != FORMAT_VERSION:
        raise ValueError(f"unsupported calibration version {version} (expected {FORMAT_VERSION})")
    cameras = dict(_camera_from_dict(c) for c in d.get("cameras") or [])
    extrinsics = [_extrinsic_from_dict(e) for e in d.get("extrinsics") or []]
    return Calibration(cameras=cameras, extrinsics=extrinsics)


def save_calibration(cal: Calibration, path: str | Path) -> Path:
    """Write ``cal`` as YAML (block style, keys in a fixed readable order)."""
    path = Path(path)
    header = (
        "# depth_perception calibration (format: calibration/README.md).\n"
        "# Extrinsics are parent_T_child: p_parent = T @ p_child; rotation is (x, y, z, w).\n"
    )
    body = yaml.safe_dump(
        calibration_to_dict(cal), sort_keys=False, default_flow_style=None, width=100
    )
    path.write_text(header + body)
    return path


def load_calibration(path: str | Path) -> Calibration:
    """Read a calibration YAML written by :func:`save_calibration` or by hand."""
    with Path(path).open() as f:
        data = yaml.safe_load(f)
    if not isinstance(data, dict):
        raise ValueError(f"{path}: not a calibration mapping")
    return calibration_from_dict(data)
