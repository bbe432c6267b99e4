"""Simulated multi-sensor sequences: a rig (RGB-D camera, LiDAR, radar) moving through a scene.

:func:`generate_sequence` yields one :class:`SimFrame` per time step: the rendered ground truth,
the raw RGB-D depth a consumer sensor would measure, LiDAR / radar sweeps in their own frames,
and target prompts for the visible graspable objects. Everything is deterministic per
``SequenceConfig.seed``; each frame and each sensor draws from its own seeded generator, so
switching one sensor off (or changing its config) does not change what the others measure.

The rig follows REP-103 / REP-105 frame names::

    base_link ─┬─ camera_link ── camera_color_optical_frame   (z forward, x right, y down)
               ├─ lidar_link                                   (x forward, y left, z up)
               └─ radar_link                                   (x forward, y left, z up)

The trajectory moves the camera's optical frame; the rest of the rig moves rigidly with it.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field, replace

import numpy as np
import transforms3d.euler as te

from depth_perception.core.camera import Intrinsics
from depth_perception.io.calibration import Calibration, Extrinsic, invert_transform
from depth_perception.io.frames import RGBDFrame, Target
from depth_perception.sim.render import RenderedView, random_intrinsics, render_view
from depth_perception.sim.scenes import MATERIALS, Scene, make_scene
from depth_perception.sim.sensors import (
    LidarConfig,
    RadarConfig,
    RGBDSensorConfig,
    simulate_lidar,
    simulate_radar,
    simulate_rgbd,
)
from depth_perception.sim.trajectory import make_trajectory

#: Object classes a robot arm could pick up (what the tabletop / room scenes place on surfaces).
GRASPABLE_CLASSES = ("box", "book", "can", "mug", "ball", "bottle", "glass")
#: camera_link (x forward, y left, z up) -> optical frame (x right, y down, z forward).
CAMERA_LINK_T_OPTICAL = np.array(
    [[0.0, 0.0, 1.0, 0.0], [-1.0, 0.0, 0.0, 0.0], [0.0, -1.0, 0.0, 0.0], [0.0, 0.0, 0.0, 1.0]]
)

# Sub-streams of the sequence seed: one per purpose, so they never share random numbers.
_STREAM_INTRINSICS, _STREAM_TRAJECTORY, _STREAM_RENDER, _STREAM_RGBD = 0, 1, 2, 3
_STREAM_LIDAR, _STREAM_RADAR = 4, 5


@dataclass(frozen=True)
class Mount:
    """Where a sensor sits in its parent frame: translation (m) + roll, pitch, yaw (deg)."""

    xyz: tuple[float, float, float] = (0.0, 0.0, 0.0)
    rpy_deg: tuple[float, float, float] = (0.0, 0.0, 0.0)

    @property
    def matrix(self) -> np.ndarray:
        """4x4 ``parent_T_sensor``; rotation = Rz(yaw) Ry(pitch) Rx(roll), as URDF's rpy."""
        T = np.eye(4)
        r, p, y = np.radians(self.rpy_deg)
        T[:3, :3] = te.euler2mat(r, p, y, "sxyz")
        T[:3, 3] = self.xyz
        return T


@dataclass
class SequenceConfig:
    """What to simulate. Defaults: a small tabletop clip with camera and LiDAR, no radar."""

    scene_kind: str = "tabletop"  # "tabletop" | "room" | "street"
    seed: int = 0
    n_frames: int = 10
    fps: float = 10.0
    start_ns: int = 1_000_000_000  # first stamp; ROS reads time 0 as "unset"
    # Camera: explicit intrinsics, else random ones (FOV, principal point) at width x height;
    # width = height = None also draws the resolution.
    intrinsics: Intrinsics | None = None
    width: int | None = 320
    height: int | None = 240
    render_noise: float = 0.01
    rgbd: RGBDSensorConfig = field(default_factory=RGBDSensorConfig)
    lidar: bool = True
    lidar_config: LidarConfig = field(default_factory=LidarConfig)
    radar: bool = False
    radar_config: RadarConfig = field(default_factory=RadarConfig)
    # Rig: each sensor's mount in base_link.
    camera_mount: Mount = field(default_factory=lambda: Mount((0.05, 0.0, 0.10)))
    lidar_mount: Mount = field(default_factory=lambda: Mount((0.0, 0.0, 0.22)))
    radar_mount: Mount = field(default_factory=lambda: Mount((0.12, 0.0, 0.0)))
    # Frame names (REP-103 / REP-105).
    base_frame: str = "base_link"
    camera_frame: str = "camera_link"
    optical_frame: str = "camera_color_optical_frame"
    lidar_frame: str = "lidar_link"
    radar_frame: str = "radar_link"
    # Targets: visible objects of these classes with at least this many pixels.
    target_classes: tuple[str, ...] = GRASPABLE_CLASSES
    min_target_pixels: int = 50

    @property
    def period_ns(self) -> int:
        return int(round(1e9 / self.fps))


@dataclass(eq=False)
class SimFrame:
    """One time step of a simulated sequence (ground truth + every sensor's measurement)."""

    index: int
    stamp_ns: int
    view: RenderedView  # ground truth: rgb, depth (optical z, NaN = miss), instance, material
    raw_depth: np.ndarray  # (H, W) float32 m, what the RGB-D sensor reports, NaN = hole
    lidar: np.ndarray | None  # sensors.LIDAR_DTYPE points in lidar_frame
    radar: np.ndarray | None  # sensors.RADAR_DTYPE points in radar_frame
    targets: list[Target]
    extrinsics: list[Extrinsic]  # the static rig, identical for every frame
    world_T_base: np.ndarray  # 4x4 pose of base_link in the scene's world frame (z up)
    lidar_frame: str = "lidar_link"
    radar_frame: str = "radar_link"

    @property
    def intrinsics(self) -> Intrinsics:
        return self.view.intrinsics

    def to_rgbd_frame(self) -> RGBDFrame:
        """The frame as every reader yields it: raw depth as ``depth``, rendered as ``gt_depth``."""
        extra: dict = {
            "targets": list(self.targets),
            "world_T_base": self.world_T_base,
            "materials": instance_materials(self.view),
        }
        if self.lidar is not None:
            extra["lidar"], extra["lidar_frame_id"] = self.lidar, self.lidar_frame
        if self.radar is not None:
            extra["radar"], extra["radar_frame_id"] = self.radar, self.radar_frame
        return RGBDFrame(
            stamp_ns=self.stamp_ns,
            rgb=self.view.rgb,
            depth=self.raw_depth,
            intrinsics=self.view.intrinsics,
            gt_depth=self.view.depth,
            instance=self.view.instance,
            extra=extra,
        )


def instance_materials(view: RenderedView) -> dict[int, str]:
    """Instance id -> material name (:data:`~depth_perception.sim.scenes.MATERIALS`) of the
    objects visible in ``view``, read off its per-pixel labels: evaluation reports transparent
    and specular targets separately, and a bag keeps this (``io.bag.MATERIALS_FILE``)."""
    ids, first = np.unique(np.asarray(view.instance).ravel(), return_index=True)
    codes = np.asarray(view.material).ravel()[first]
    return {
        int(i): MATERIALS[int(c)]
        for i, c in zip(ids, codes, strict=True)
        if i > 0 and c < len(MATERIALS)
    }


def _rng(cfg: SequenceConfig, *stream: int) -> np.random.Generator:
    return np.random.default_rng([cfg.seed, *stream])


def sequence_intrinsics(cfg: SequenceConfig) -> Intrinsics:
    """The camera of the sequence (explicit, or drawn from the seed), in the optical frame."""
    if cfg.intrinsics is not None:
        return replace(cfg.intrinsics, frame_id=cfg.optical_frame)
    intr = random_intrinsics(_rng(cfg, _STREAM_INTRINSICS), cfg.width, cfg.height)
    return replace(intr, frame_id=cfg.optical_frame)


def rig_extrinsics(cfg: SequenceConfig) -> list[Extrinsic]:
    """The static transforms of the rig, parent -> child, as /tf_static carries them."""
    out = [
        Extrinsic.from_matrix(cfg.base_frame, cfg.camera_frame, cfg.camera_mount.matrix),
        Extrinsic.from_matrix(cfg.camera_frame, cfg.optical_frame, CAMERA_LINK_T_OPTICAL),
    ]
    if cfg.lidar:
        out.append(Extrinsic.from_matrix(cfg.base_frame, cfg.lidar_frame, cfg.lidar_mount.matrix))
    if cfg.radar:
        out.append(Extrinsic.from_matrix(cfg.base_frame, cfg.radar_frame, cfg.radar_mount.matrix))
    return out


def sequence_calibration(cfg: SequenceConfig) -> Calibration:
    """Camera intrinsics + rig extrinsics of the sequence (what ``calibration.yaml`` holds)."""
    return Calibration(cameras={"color": sequence_intrinsics(cfg)}, extrinsics=rig_extrinsics(cfg))


def visible_targets(
    view: RenderedView, scene: Scene, classes: tuple[str, ...], min_pixels: int
) -> list[Target]:
    """Ground-truth target prompts: visible objects of ``classes``, sorted by instance id."""
    out = []
    for instance_id, box in sorted(view.boxes(min_pixels=min_pixels).items()):
        name = scene.object_by_id(instance_id).class_name
        if name in classes:
            out.append(Target(target_id=instance_id, text=name, box=box))
    return out


def generate_sequence(cfg: SequenceConfig) -> Iterator[SimFrame]:
    """Simulate ``cfg.n_frames`` frames, ``1 / fps`` apart starting at ``cfg.start_ns``."""
    if cfg.n_frames < 1:
        raise ValueError(f"n_frames must be >= 1, got {cfg.n_frames}")
    scene = make_scene(cfg.scene_kind, cfg.seed)
    intr = sequence_intrinsics(cfg)
    poses = make_trajectory(scene, cfg.n_frames, _rng(cfg, _STREAM_TRAJECTORY))
    extrinsics = rig_extrinsics(cfg)
    base_T_optical = cfg.camera_mount.matrix @ CAMERA_LINK_T_OPTICAL
    optical_T_base = invert_transform(base_T_optical)
    for i, pose in enumerate(poses):
        # The trajectory places the optical frame; base_link follows rigidly.
        world_T_base = pose.world_T_cam @ optical_T_base
        render_seed = int(_rng(cfg, _STREAM_RENDER, i).integers(2**31))
        view = render_view(scene, intr, pose, seed=render_seed, noise=cfg.render_noise)
        raw = simulate_rgbd(view, cfg.rgbd, _rng(cfg, _STREAM_RGBD, i))
        lidar = radar = None
        if cfg.lidar:
            world_T_lidar = world_T_base @ cfg.lidar_mount.matrix
            lidar = simulate_lidar(
                scene, world_T_lidar, cfg.lidar_config, _rng(cfg, _STREAM_LIDAR, i)
            )
        if cfg.radar:
            world_T_radar = world_T_base @ cfg.radar_mount.matrix
            radar = simulate_radar(
                scene, world_T_radar, cfg.radar_config, _rng(cfg, _STREAM_RADAR, i)
            )
        yield SimFrame(
            index=i,
            stamp_ns=cfg.start_ns + i * cfg.period_ns,
            view=view,
            raw_depth=raw,
            lidar=lidar,
            radar=radar,
            targets=visible_targets(view, scene, cfg.target_classes, cfg.min_target_pixels),
            extrinsics=extrinsics,
            world_T_base=world_T_base,
            lidar_frame=cfg.lidar_frame,
            radar_frame=cfg.radar_frame,
        )
