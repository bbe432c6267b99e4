"""Test-session setup shared by every test.

DDS traffic stays on this machine and on a domain of its own, so parallel runs (CI, several
developers, helpers) never see each other's topics.
"""

import os
import random
import uuid

import pytest

os.environ.setdefault("ROS_DOMAIN_ID", str(random.Random(os.getpid()).randint(1, 100)))
os.environ.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
os.environ.setdefault("RMW_IMPLEMENTATION", "rmw_fastrtps_cpp")


@pytest.fixture(scope="module")
def ros_context():
    """An rclpy context of the test module's own (safe beside nodes in other contexts)."""
    import rclpy

    context = rclpy.Context()
    rclpy.init(context=context)
    yield context
    rclpy.shutdown(context=context)


@pytest.fixture
def node(ros_context, request):
    """A fresh node in the module's context, named after the test module."""
    from rclpy.node import Node

    n = Node(f"{request.module.__name__}_{uuid.uuid4().hex[:8]}", context=ros_context)
    yield n
    n.destroy_node()


@pytest.fixture
def one_thread():
    """A node and the offline engine both on one torch thread: bit-identical arithmetic."""
    import torch

    before = torch.get_num_threads()
    yield 1
    torch.set_num_threads(before)
