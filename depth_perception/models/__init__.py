"""Learned depth models (torch only, no ROS).

``lingbot``: LingBot-Depth (masked depth modeling), faithful to the official MDMModel;
``checkpoints``: official ``model.pt`` / our safetensors checkpoints and DINOv2 initialisation.
"""

from depth_perception.models.lingbot import PRESETS, LingBotConfig, LingBotDepth, build_preset

__all__ = ["PRESETS", "LingBotConfig", "LingBotDepth", "build_preset"]
