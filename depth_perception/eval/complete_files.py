"""Complete depth of image folders or bags offline and write the results as files.

Per frame ``<name>``: ``<name>_depth.png`` (16-bit millimetres, 0 = no depth, what RGB-D tools
read), ``<name>_depth.npy`` (float32 metres, NaN = no depth), ``<name>_confidence.png`` (8-bit,
when the method has one) and ``<name>_preview.png`` (colour | input | output, colorized).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from tqdm import tqdm

from depth_perception.core.depth import depth_to_mm
from depth_perception.core.visualize import (
    ColorBar,
    colorize_depth,
    depth_range,
    save_png,
    side_by_side,
)
from depth_perception.engines.base import Engine, FrameInputs
from depth_perception.eval.evaluate import chain_bags, pipeline_frames, run_offline
from depth_perception.eval.pipelines import Pipeline
from depth_perception.io.frames import RGBDFrame

if TYPE_CHECKING:
    from depth_perception.io.recording import ReadOptions


def frames_from(
    path: str | Path, options: ReadOptions | None = None
) -> Iterator[tuple[str, RGBDFrame]]:
    """(name, frame) of a recording (rosbag2 directory, ROS 1 .bag, .mcap), a folder of
    captures, or one capture directory; ``options`` say how to read a recording."""
    from depth_perception.io.image_folder import capture_dirs, is_capture_dir, read_capture
    from depth_perception.io.recording import is_recording

    path = Path(path)
    if is_recording(path):
        # As eval-bag reads bags: each frame carries the bag's calibration (LiDAR extrinsic).
        for i, frame in enumerate(chain_bags([path], options)):
            yield f"{i:06d}", frame
    elif is_capture_dir(path):
        yield path.name, read_capture(path)
    else:
        dirs = capture_dirs(path)
        if not dirs:
            raise FileNotFoundError(f"{path}: neither a recording nor image captures")
        for d in dirs:
            yield d.name, read_capture(d)


def pipeline_items(
    pipeline: Pipeline, items: Iterable[tuple[str, RGBDFrame]]
) -> Iterator[tuple[str, RGBDFrame, FrameInputs]]:
    """(name, frame, engine inputs) as ``pipeline`` takes the frames
    (:func:`evaluate.pipeline_frames`): a LiDAR pipeline gets the LiDAR prompt, never the
    sensor depth. Raises :class:`MissingInputError` at once when the first frame lacks an input
    it needs."""
    names: deque[str] = deque()

    def frames() -> Iterator[RGBDFrame]:
        for name, frame in items:
            names.append(name)
            yield frame

    stream = pipeline_frames(pipeline, frames())  # one frame in, one out, in order

    def paired() -> Iterator[tuple[str, RGBDFrame, FrameInputs]]:
        for frame, inputs in stream:
            yield names.popleft(), frame, inputs

    return paired()


def complete_files(
    engine: Engine,
    items: Iterable[tuple[str, RGBDFrame, FrameInputs]],
    out_dir: str | Path,
    total: int | None = None,
) -> list[Path]:
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for name, frame, inputs in tqdm(items, total=total, desc=engine.model_id, unit="frame"):
        result = run_offline(engine, inputs)
        depth_png = save_png(out / f"{name}_depth.png", depth_to_mm(result.depth))
        np.save(out / f"{name}_depth.npy", result.depth)
        if result.confidence is not None:
            conf = np.clip(np.nan_to_num(result.confidence) * 255.0 + 0.5, 0, 255)
            save_png(out / f"{name}_confidence.png", conf.astype(np.uint8))
        vmin, vmax = depth_range(result.depth)
        bar = ColorBar.depth(vmin, vmax)
        preview = side_by_side(
            [
                frame.rgb,
                colorize_depth(frame.depth, vmin, vmax),
                colorize_depth(result.depth, vmin, vmax),
            ],
            ["rgb", "input depth", engine.model_id],
            colorbars=[None, bar, bar],
        )
        save_png(out / f"{name}_preview.png", preview)
        written.append(depth_png)
    return written
