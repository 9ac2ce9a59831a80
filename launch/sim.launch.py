"""ROS 2 launch file: the mnemobot node graph on the simulated robot (pybullet household).

    ros2 launch mnemobot sim.launch.py [params:=FILE.yaml] [task:=fetch] [seed:=0]

The same graph without a ROS 2 installation: ``mnemobot ros up --sim``. Both read the same
parameter file (``launch/params/sim.yaml``).
"""

from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument
from launch.substitutions import LaunchConfiguration, PathJoinSubstitution
from launch_ros.actions import Node
from launch_ros.substitutions import FindPackageShare


def generate_launch_description() -> LaunchDescription:
    params = LaunchConfiguration("params")
    task = LaunchConfiguration("task")
    seed = LaunchConfiguration("seed")
    sensor_profile = LaunchConfiguration("sensor_profile")
    memory_db = LaunchConfiguration("memory_db")
    args = [
        DeclareLaunchArgument("params", default_value=PathJoinSubstitution(
            [FindPackageShare("mnemobot"), "launch", "params", "sim.yaml"]),
            description="parameter file for every node (topics, QoS, planner, limits)"),
        DeclareLaunchArgument("task", default_value="fetch",
                              description="task family the simulated household is set up for"),
        DeclareLaunchArgument("seed", default_value="0", description="seed of the simulated household"),
        DeclareLaunchArgument("sensor_profile", default_value="ideal",
                              description="simulated sensor: ideal, kinect, realsense, heavy or a YAML file"),
        DeclareLaunchArgument("memory_db", default_value="",
                              description="SQLite file the memory persists to and reloads ('' = in memory only)"),
    ]
    sim_time = {"use_sim_time": True}
    nodes = [
        Node(package="mnemobot", executable="mnemobot-sim-robot", name="sim_robot", output="screen",
             parameters=[params, {"task": task, "seed": seed, "sensor_profile": sensor_profile}]),
        Node(package="mnemobot", executable="mnemobot-robot-bridge", name="robot_bridge", output="screen",
             parameters=[params, sim_time]),
        Node(package="mnemobot", executable="mnemobot-memory", name="memory", output="screen",
             parameters=[params, sim_time, {"memory_db": memory_db}]),
        Node(package="mnemobot", executable="mnemobot-orchestrator", name="orchestrator", output="screen",
             parameters=[params]),  # robot time comes from the joint states' stamps
    ]
    return LaunchDescription([*args, *nodes])
