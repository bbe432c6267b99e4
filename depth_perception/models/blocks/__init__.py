"""Building blocks: DINOv2-compatible ViT (``vit``) and MoGe-style conv decoder (``convstack``)."""
