"""Depth registration into the colour camera beside a camera driver (depth_image_proc's register).

  ros2 launch depth_perception depth_register.launch.py namespace:=camera \
      depth_topic:=depth/image_rect_raw depth_info_topic:=depth/camera_info \
      colour_info_topic:=color/camera_info calibration_file:=/robot/my_rig.yaml

Publishes depth_registered/image_rect and depth_registered/camera_info in the namespace.
Parameters (the extrinsic's source, QoS, ...) live in config/depth_register.yaml; pass your own
file with params_file:=... `calibration_file` and `use_sim_time` override the file only when
given on the command line (their default, empty, keeps the file's value).
"""

from depth_perception.ros.launch_description import node_launch_description


def generate_launch_description():
    return node_launch_description(
        "depth_register_node",
        "depth_register.yaml",
        topics=[
            (
                "depth_topic",
                "depth/image_rect",
                "depth image of the depth camera (16UC1 / mono16 mm or 32FC1 m)",
            ),
            ("depth_info_topic", "depth/camera_info", "camera_info topic of the depth camera"),
            ("colour_info_topic", "rgb/camera_info", "camera_info topic of the colour camera"),
        ],
        overrides={
            "calibration_file": "calibration YAML with the depth->colour extrinsic; empty: the "
            "params file's calibration_file / colour_T_depth",
        },
    )
