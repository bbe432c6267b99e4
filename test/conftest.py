"""Test-session setup shared by every test.

DDS traffic stays on this machine and on a domain of its own, so parallel runs (CI, several
developers, helpers) never see each other's topics.
"""

import os
import random

os.environ.setdefault("ROS_DOMAIN_ID", str(random.Random(os.getpid()).randint(1, 100)))
os.environ.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
os.environ.setdefault("RMW_IMPLEMENTATION", "rmw_fastrtps_cpp")
