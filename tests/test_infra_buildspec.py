"""infra/buildspec.yml: valid CodeBuild YAML whose shell parses and whose `qcbr` commands exist.

CodeBuild cannot run here; what can drift silently is checked instead: each command block is
valid bash, every `qcbr ...` line parses with the real CLI parser, the modes match the
pipeline actions, and every variable the build reads is set by the project stack, by CodeBuild
itself or by the buildspec.
"""
from __future__ import annotations

import re
import shlex
import subprocess
from pathlib import Path

import yaml

from qcbr.cli import build_parser

ROOT = Path(__file__).resolve().parent.parent
BUILDSPEC = ROOT / "infra" / "buildspec.yml"


def _spec() -> dict:
    return yaml.safe_load(BUILDSPEC.read_text())


def _commands() -> list[str]:
    spec = _spec()
    return [c for phase in spec["phases"].values() for c in phase.get("commands", [])]


def test_buildspec_shape():
    spec = _spec()
    assert str(spec["version"]) == "0.2"
    assert list(spec["phases"]) == ["install", "pre_build", "build"]
    assert spec["phases"]["install"]["runtime-versions"]["python"] == 3.11
    assert set(spec["env"]["exported-variables"]) == {"IMAGE_URI", "TRAINING_JOB_NAME", "MODEL_PACKAGE_VERSION"}
    assert spec["artifacts"]["files"] == ["**/*"]


def test_every_command_block_is_valid_bash(tmp_path):
    for i, command in enumerate(_commands()):
        script = tmp_path / f"c{i}.sh"
        script.write_text(command)
        done = subprocess.run(["bash", "-n", str(script)], capture_output=True, text=True)
        assert done.returncode == 0, f"{command}\n{done.stderr}"


def _qcbr_lines() -> list[str]:
    lines = []
    for command in _commands():
        for line in command.splitlines():
            found = re.search(r"(?:^|\$\(|\s)(qcbr\s[^)>|]*)", line.strip())
            if found:
                lines.append(found.group(1).strip())
    return lines


def test_qcbr_commands_parse_with_the_real_cli():
    lines = _qcbr_lines()
    joined = "\n".join(lines)
    for expected in ("qcbr aws check", "qcbr train", "qcbr models register", "qcbr aws deploy-config",
                     "qcbr aws smoke-test"):
        assert expected in joined
    parser = build_parser()
    for line in lines:
        argv = shlex.split(re.sub(r'"\$[A-Z_]+"|\$[A-Z_]+', "VALUE", line))[1:]
        args = parser.parse_args(argv)  # SystemExit (a test error) if the CLI lacks the command or an option
        assert callable(args.func), line


def test_build_modes_match_the_pipeline_actions():
    text = BUILDSPEC.read_text()
    modes = set(re.findall(r"^\s+(\w+)\)$", text, flags=re.M))
    assert modes == {"model", "deploy", "test"}
    project = (ROOT / "infra" / "cloudformation" / "project.yaml").read_text()
    assert set(re.findall(r'"name": "QCBR_BUILD_MODE", "value": "(\w+)"', project)) == modes


def test_every_variable_the_build_reads_is_set_somewhere():
    text = BUILDSPEC.read_text()
    used = set(re.findall(r"\$\{?([A-Z][A-Z0-9_]+)", text))
    spec = _spec()
    defined = set(spec["env"]["variables"]) | set(re.findall(r"(?:export\s+)?([A-Z][A-Z0-9_]+)=", text))
    project = (ROOT / "infra" / "cloudformation" / "project.yaml").read_text()
    from_stack = set(re.findall(r"\{Name: ([A-Z_]+), Value:", project))
    codebuild = {v for v in used if v.startswith("CODEBUILD_")}
    missing = used - defined - from_stack - codebuild
    assert missing == set(), f"set these in project.yaml's CodeBuild environment: {sorted(missing)}"
    assert {"QCBR_BACKEND", "QCBR_PROJECT", "QCBR_AWS_BUCKET", "QCBR_AWS_ROLE_ARN", "IMAGE_REPO_URI"} <= from_stack
