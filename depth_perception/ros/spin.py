"""The ``main()`` body every node shares: init, spin, clean shutdown on Ctrl-C or SIGTERM.

A node that cannot start (bad checkpoint, no GPU for ``device:=cuda``, bad parameter) logs one
error saying why and the process exits with status 1 — no traceback of the half-built node.
"""

from __future__ import annotations

import sys
from collections.abc import Callable

import rclpy
from rclpy.executors import ExternalShutdownException
from rclpy.node import Node

from depth_perception.ros.completion_node import NodeStartupError


def spin_node(make_node: Callable[[], Node], args: list[str] | None = None) -> None:
    rclpy.init(args=args)
    node = None
    exit_code = 0
    try:
        node = make_node()
        rclpy.spin(node)
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    except NodeStartupError as exc:
        name = getattr(make_node, "__name__", "node")
        rclpy.logging.get_logger(name).fatal(f"cannot start: {exc}")
        exit_code = 1
    finally:
        if node is not None:
            node.destroy_node()
        rclpy.try_shutdown()
    if exit_code:
        sys.exit(exit_code)
