"""Named pipelines that evaluation, the CLI and the demo can run, offline or as real nodes."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from depth_perception.engines.base import CompletionEngine
from depth_perception.engines.classical import ClassicalFillEngine
from depth_perception.paths import config_file


@dataclass(frozen=True)
class Pipeline:
    """How to run one depth-completion method: as an in-process engine or as its ROS node."""

    name: str
    description: str
    executable: str  # console script of the node (launched for DDS replay)
    params_file: str  # file name under config/
    make_engine: Callable[[], CompletionEngine]
    parameters: dict[str, object] = field(default_factory=dict)  # overrides of the params file

    @property
    def params_path(self) -> str:
        return str(config_file(self.params_file))


def _fill(method: str, description: str) -> Pipeline:
    return Pipeline(
        name=method,
        description=description,
        executable="depth_fill_node",
        params_file="depth_fill.yaml",
        make_engine=lambda: ClassicalFillEngine(method),
        parameters={"method": method},
    )


PIPELINES: dict[str, Pipeline] = {
    p.name: p
    for p in (
        _fill("nearest", "nearest valid pixel (classical)"),
        _fill("inpaint_telea", "OpenCV Telea inpainting (classical)"),
        _fill("inpaint_ns", "OpenCV Navier-Stokes inpainting (classical)"),
        _fill("ipbasic", "IP-Basic morphological fill (classical)"),
    )
}
BASELINES = ("nearest", "inpaint_telea", "ipbasic")


def get_pipeline(name: str) -> Pipeline:
    try:
        return PIPELINES[name]
    except KeyError:
        raise ValueError(f"unknown pipeline {name!r}; choose from {sorted(PIPELINES)}") from None
