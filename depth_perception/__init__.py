"""depth_perception: learned metric depth for ROS 2 robots.

``core`` (numpy only), ``sim``, ``io`` and ``eval`` import no ROS; ``ros`` holds the rclpy nodes.
"""

__version__ = "0.1.0"
