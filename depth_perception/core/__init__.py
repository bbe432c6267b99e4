"""Pure numpy/OpenCV core: camera geometry, depth encodings, clouds, metrics, baselines.

Nothing here imports rclpy or torch.
"""
