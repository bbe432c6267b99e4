"""The QoS profiles the nodes use, by intent rather than by field.

- :func:`sensor_data_qos`: camera/depth/cloud streams. Best effort + volatile + keep last, as
  rclpy's ``qos_profile_sensor_data`` (what camera drivers publish with): a late frame is worth
  less than the next one. A best-effort subscriber also matches reliable publishers.
- :func:`reliable_qos`: outputs other nodes must not miss (e.g. detections, metrics).
- :func:`latched_qos`: rarely-changing state that late joiners need (e.g. a static camera_info
  or a map): transient local, reliable, depth 1 -- ROS 1's "latched" topic.
"""

from __future__ import annotations

from rclpy.qos import (
    DurabilityPolicy,
    HistoryPolicy,
    QoSProfile,
    ReliabilityPolicy,
    qos_profile_sensor_data,
)

__all__ = ["latched_qos", "qos_by_name", "reliable_qos", "sensor_data_qos"]


def sensor_data_qos(depth: int = 5) -> QoSProfile:
    """rclpy's ``qos_profile_sensor_data`` with a chosen history depth."""
    return QoSProfile(
        history=HistoryPolicy.KEEP_LAST,
        depth=depth,
        reliability=qos_profile_sensor_data.reliability,  # BEST_EFFORT
        durability=qos_profile_sensor_data.durability,  # VOLATILE
    )


def reliable_qos(depth: int = 10) -> QoSProfile:
    """Reliable, volatile, keep last ``depth`` (rclpy's default profile with a chosen depth)."""
    return QoSProfile(
        history=HistoryPolicy.KEEP_LAST,
        depth=depth,
        reliability=ReliabilityPolicy.RELIABLE,
        durability=DurabilityPolicy.VOLATILE,
    )


def latched_qos() -> QoSProfile:
    """Transient local + reliable + keep last 1: late subscribers get the last message."""
    return QoSProfile(
        history=HistoryPolicy.KEEP_LAST,
        depth=1,
        reliability=ReliabilityPolicy.RELIABLE,
        durability=DurabilityPolicy.TRANSIENT_LOCAL,
    )


def tf_static_qos() -> QoSProfile:
    """tf2_ros's static broadcaster / listener QoS: reliable, transient local, keep last 100
    (``latched_qos`` with tf2's depth: every latched transform reaches a late subscriber)."""
    return QoSProfile(
        history=HistoryPolicy.KEEP_LAST,
        depth=100,
        reliability=ReliabilityPolicy.RELIABLE,
        durability=DurabilityPolicy.TRANSIENT_LOCAL,
    )


_BY_NAME = {"sensor_data": sensor_data_qos, "reliable": reliable_qos}


def qos_by_name(name: str, depth: int | None = None) -> QoSProfile:
    """Profile from a parameter string: "sensor_data", "reliable" or "latched"."""
    if name == "latched":
        return latched_qos()
    if name not in _BY_NAME:
        raise ValueError(f"unknown QoS profile '{name}'; expected sensor_data, reliable or latched")
    return _BY_NAME[name]() if depth is None else _BY_NAME[name](depth)
