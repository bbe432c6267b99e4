"""Start nodes as their own processes, the way `ros2 run` / a launch file would.

Used by the replay evaluation, the demo and the node tests (no `launch` package needed).
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path


def _format_param(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


class NodeProcess:
    """A node process with a params file, namespace, parameter overrides and remappings."""

    def __init__(
        self,
        executable: str,
        params_file: str | Path | None = None,
        namespace: str | None = None,
        parameters: dict[str, object] | None = None,
        remappings: dict[str, str] | None = None,
        log_path: str | Path | None = None,
        env: dict[str, str] | None = None,
    ) -> None:
        exe = shutil.which(executable)
        # Without the console script on PATH, run the node's module (named like the executable).
        cmd = [exe] if exe else [sys.executable, "-m", f"depth_perception.ros.nodes.{executable}"]
        ros_args: list[str] = []
        if params_file is not None:
            ros_args += ["--params-file", str(params_file)]
        if namespace:
            ros_args += ["-r", f"__ns:={namespace}"]
        for name, value in (parameters or {}).items():
            ros_args += ["-p", f"{name}:={_format_param(value)}"]
        for src, dst in (remappings or {}).items():
            ros_args += ["-r", f"{src}:={dst}"]
        self.command = cmd + (["--ros-args", *ros_args] if ros_args else [])
        self.log_path = Path(log_path) if log_path else None
        self.env = {**os.environ, **(env or {})}
        self.process: subprocess.Popen | None = None

    def start(self) -> NodeProcess:
        out = open(self.log_path, "w") if self.log_path else subprocess.DEVNULL  # noqa: SIM115
        self.process = subprocess.Popen(
            self.command, stdout=out, stderr=subprocess.STDOUT, env=self.env
        )
        return self

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def stop(self, timeout: float = 10.0) -> int | None:
        """SIGINT (clean rclpy shutdown), then SIGTERM, then SIGKILL; returns the exit code."""
        if self.process is None:
            return None
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGKILL):
            if self.process.poll() is not None:
                break
            self.process.send_signal(sig)
            try:
                self.process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                continue
        return self.process.returncode

    def __enter__(self) -> NodeProcess:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
