"""The only package that imports rclpy: conversions, sync, QoS, diagnostics and the nodes."""
