"""Training data: rosbags -> tar shards -> augmented, distributed-aware batches.

- :mod:`training.extract` (``python -m training.extract``): find rosbag2 recordings, turn their
  synchronized RGB-D frames into WebDataset-style tar shards plus a ``manifest.jsonl``;
  resumable, parallel, one Slurm array task per bag group.
- :mod:`training.shards`: the shard format (members, manifest, sidecar index), writing and
  random-access reading. numpy / OpenCV only.
- :mod:`training.augment`: geometric (crop, flip, resize, unified focal) and photometric (colour
  jitter, JPEG, motion blur, shot noise) augmentation that keeps depth, target and intrinsics
  consistent with the image.
- :mod:`training.dataset`: ``ShardDataset`` (a torch ``IterableDataset``) that splits a seeded
  per-epoch permutation exactly across ranks and DataLoader workers, resumes exactly, and a
  ``Collate`` that brings variable image sizes to one training resolution.
- :mod:`training.trainer` (``python -m training.train``): the one training loop; the methods
  are tasks plugged into it (:mod:`training.tasks`: LingBot-Depth, the MetricAnything teacher).

Extraction runs on machines without torch, unless ``--prior`` asks for a model to run.
"""
