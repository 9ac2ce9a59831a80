"""The ROS 2 packaging a `colcon build` on a ROS host needs, checked without ROS's launch:
launch files declare every argument with a default and a description and start executables
the package installs; the parameter files are valid ROS 2 parameter YAML."""

from __future__ import annotations

import ast
import xml.etree.ElementTree as ET
from pathlib import Path

import tomllib
import yaml

ROOT = Path(__file__).resolve().parents[1]
LAUNCH_FILES = sorted((ROOT / "launch").glob("*.launch.py"))


def _calls(tree: ast.AST, name: str) -> list[ast.Call]:
    return [n for n in ast.walk(tree) if isinstance(n, ast.Call)
            and getattr(n.func, "id", getattr(n.func, "attr", None)) == name]


def test_launch_files_declare_every_argument_with_default_and_description():
    assert {p.name for p in LAUNCH_FILES} == {"sim.launch.py", "robot.launch.py"}
    for path in LAUNCH_FILES:
        tree = ast.parse(path.read_text(), filename=str(path))
        assert any(isinstance(n, ast.FunctionDef) and n.name == "generate_launch_description" for n in tree.body)
        declared = _calls(tree, "DeclareLaunchArgument")
        assert declared, path
        names = set()
        for call in declared:
            kw = {k.arg for k in call.keywords}
            assert {"default_value", "description"} <= kw, (path.name, ast.unparse(call))
            names.add(ast.literal_eval(call.args[0]))
        used = {ast.literal_eval(c.args[0]) for c in _calls(tree, "LaunchConfiguration")}
        assert used <= names, (path.name, used - names)


def test_launch_files_start_installed_executables():
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    for path in LAUNCH_FILES:
        tree = ast.parse(path.read_text())
        for call in _calls(tree, "Node"):
            kw = {k.arg: k.value for k in call.keywords}
            assert ast.literal_eval(kw["package"]) == "mnemobot"
            exe = ast.literal_eval(kw["executable"])
            assert exe in scripts, f"{path.name}: {exe} is not a console script of the package"
            module, _, func = scripts[exe].partition(":")
            assert (ROOT / Path(*module.split(".")[1:])).with_suffix(".py").is_file(), module


def test_parameter_files_are_ros2_parameter_yaml():
    for name in ("sim.yaml", "robot.yaml"):
        data = yaml.safe_load((ROOT / "launch" / "params" / name).read_text())
        assert isinstance(data, dict) and data
        for node, body in data.items():
            assert isinstance(body, dict) and set(body) == {"ros__parameters"}, (name, node)
            assert isinstance(body["ros__parameters"], dict)


def test_ament_package_manifest_and_index_marker():
    pkg = ET.parse(ROOT / "package.xml").getroot()
    assert pkg.findtext("name") == "mnemobot"
    assert pkg.find("export/build_type").text == "ament_python"
    assert (ROOT / "resource" / "mnemobot").is_file()
    iface = ET.parse(ROOT / "ros2/interfaces/mnemobot_interfaces/package.xml").getroot()
    assert iface.findtext("member_of_group") == "rosidl_interface_packages"
    cmake = (ROOT / "ros2/interfaces/mnemobot_interfaces/CMakeLists.txt").read_text()
    for f in ("msg/MemoryOp.msg", "msg/MemoryOpArray.msg", "srv/QueryMemory.srv", "action/ExecuteTask.action"):
        assert f'"{f}"' in cmake and (ROOT / "ros2/interfaces/mnemobot_interfaces" / f).is_file()
