"""The ``main()`` body every node shares: init, spin, clean shutdown on Ctrl-C or SIGTERM.

A node that cannot start (bad checkpoint, no GPU for ``device:=cuda``, bad parameter) logs one
error saying why and the process exits with status 1 — no traceback of the half-built node.

The executor is the node's ``executor`` parameter (read-only, from the params file):

- ``events`` (default): rclpy's C++ ``EventsExecutor`` (``rclpy.experimental``, ROS 2 Kilted
  and later). Its thread spends about half the CPU per received 640x480 frame of the Python
  executor, which rebuilds its wait set in Python at every wake-up
  (``bench/bench_node_overhead.py``). On an rclpy without it (Jazzy) the node says so in its
  start-up log and uses ``single_threaded``.
- ``single_threaded``: ``rclpy.spin``'s ``SingleThreadedExecutor``.
"""

from __future__ import annotations

import sys
from collections.abc import Callable

import rclpy
from rcl_interfaces.msg import ParameterDescriptor
from rclpy.context import Context
from rclpy.executors import Executor, ExternalShutdownException, SingleThreadedExecutor
from rclpy.node import Node

from depth_perception.ros.completion_node import NodeStartupError

EXECUTORS = ("events", "single_threaded")


def make_executor(kind: str, context: Context | None = None) -> tuple[Executor, str]:
    """(executor, the kind actually made): ``events`` falls back to ``single_threaded`` when
    this rclpy has no EventsExecutor."""
    if kind not in EXECUTORS:
        raise NodeStartupError(f"executor must be one of {', '.join(EXECUTORS)}, not {kind!r}")
    if kind == "events":
        try:
            from rclpy.experimental import EventsExecutor
        except ImportError:
            return SingleThreadedExecutor(context=context), "single_threaded"
        return EventsExecutor(context=context), "events"
    return SingleThreadedExecutor(context=context), "single_threaded"


def spin_until_shutdown(executor: Executor, context: Context | None = None) -> None:
    """Serve callbacks until the context shuts down (Ctrl-C, SIGTERM, ``rclpy.shutdown``)."""
    context = context or rclpy.get_default_context()
    # Not ``executor.spin()``: the EventsExecutor's spin() keeps a core busy with our nodes
    # (rclpy 10, Kilted); spin_once with a timeout blocks until work or the timeout, and a
    # shutdown wakes it.
    while context.ok():
        executor.spin_once(timeout_sec=1.0)


def spin_node(make_node: Callable[[], Node], args: list[str] | None = None) -> None:
    rclpy.init(args=args)
    node = None
    executor = None
    exit_code = 0
    try:
        node = make_node()
        wanted = node.declare_parameter(
            "executor",
            "events",
            ParameterDescriptor(
                description="events (rclpy's C++ EventsExecutor) | single_threaded",
                read_only=True,
            ),
        ).value
        executor, kind = make_executor(str(wanted))
        if kind != wanted:
            node.get_logger().info(f"executor: {kind} ({wanted} is not in this rclpy)")
        else:
            node.get_logger().info(f"executor: {kind}")
        executor.add_node(node)
        spin_until_shutdown(executor)
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    except NodeStartupError as exc:
        name = getattr(make_node, "__name__", "node")
        rclpy.logging.get_logger(name).fatal(f"cannot start: {exc}")
        exit_code = 1
    finally:
        if executor is not None:
            executor.shutdown()
        if node is not None:
            node.destroy_node()
        rclpy.try_shutdown()
    if exit_code:
        sys.exit(exit_code)
