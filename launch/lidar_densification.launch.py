"""Dense metric depth from a camera and a LiDAR (or radar) with the MetricAnything teacher.

  ros2 launch depth_perception lidar_densification.launch.py namespace:=camera device:=cuda \
      rgb_topic:=color/image_raw camera_info_topic:=color/camera_info \
      lidar_points:=/velodyne_points calibration_file:=/robot/calibration.yaml

Parameters live in config/prompted_depth.yaml (override with params_file:=...): the checkpoint,
the prior, prompt_sources ([lidar] there), output_alignment, max_prompt_age, the outputs.
`device`, `prompt_sources` (e.g. "[lidar, radar]" or "[radar]"), `output_alignment` (global
there; none for a radar or sensor-depth prompt), `calibration_file` (the extrinsic
source: our calibration YAML; the file's default, empty, reads /tf_static) and `use_sim_time`
override the params file only when given on the command line (their default, empty, keeps the
file's value). `lidar_points` / `radar_points` remap the node's lidar/points and radar/points
topics (the node's lidar_topic / radar_topic parameters left at those defaults); `depth_topic`
is used only with the sensor_depth prompt source.
"""

from depth_perception.ros.launch_description import node_launch_description


def generate_launch_description():
    return node_launch_description(
        "prompted_depth_node",
        "prompted_depth.yaml",
        topics=[
            ("rgb_topic", "rgb/image_rect_color", "colour image topic"),
            ("camera_info_topic", "rgb/camera_info", "camera_info topic of the colour camera"),
            ("lidar_points", "lidar/points", "LiDAR sensor_msgs/PointCloud2 topic"),
            ("radar_points", "radar/points", "radar sensor_msgs/PointCloud2 topic"),
            (
                "depth_topic",
                "depth_registered/image_rect",
                "depth image registered to the colour camera (prompt source sensor_depth only)",
            ),
        ],
        overrides={
            "device": "auto|cpu|cuda|cuda:N; empty: the params file's value (auto if unset)",
            "prompt_sources": "e.g. [lidar], [radar] or [lidar, radar]; empty: the params file's",
            "output_alignment": (
                "global (refit the depth to the prompt: LiDAR) | none (radar, sensor_depth); "
                "empty: the params file's value (global)"
            ),
            "calibration_file": (
                "extrinsics of the LiDAR / radar (our calibration YAML); empty: the params "
                "file's value (empty there: /tf_static)"
            ),
        },
    )
