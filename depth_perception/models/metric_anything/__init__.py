"""MetricAnything: the prompted teacher and the prompt-free student, one network.

``config``: :class:`MetricAnythingConfig` (skip order, prompt branch, sizes); ``encoder``:
DepthPro tiling around one shared DINOv3 ViT; ``decoder``: multi-resolution convs; ``head``:
depth head and zero-initialised prompt stages; ``model``: :class:`MetricAnythingDepth`
(``forward`` / ``infer`` with the focal length); ``presets``; ``checkpoints``: ours
(safetensors + config.json), the official student ``.pt``, teacher from a prompt-free model.
"""

from depth_perception.models.metric_anything.config import (
    STUDENT_FORWARD_IDS,
    TEACHER_FORWARD_IDS,
    MetricAnythingConfig,
)
from depth_perception.models.metric_anything.model import MetricAnythingDepth, normalize_image
from depth_perception.models.metric_anything.presets import (
    OFFICIAL_STUDENT,
    PRESETS,
    build_preset,
    count_parameters,
    preset_config,
)

__all__ = [
    "OFFICIAL_STUDENT",
    "PRESETS",
    "STUDENT_FORWARD_IDS",
    "TEACHER_FORWARD_IDS",
    "MetricAnythingConfig",
    "MetricAnythingDepth",
    "build_preset",
    "count_parameters",
    "normalize_image",
    "preset_config",
]
