"""Configuration: environment first, then the config file, then defaults.

The config file is TOML, read from ``$QCBR_CONFIG`` if set, else ``$QCBR_HOME/config.toml``, else
``./qcbr.toml``. Keys are the environment names without the ``QCBR_`` prefix, lower-cased
(``backend = "aws"``, ``project = "churn"``, ``aws_bucket = "..."``).
"""
from __future__ import annotations

import os
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

from qcbr.errors import ConfigError

BACKENDS = ("local", "aws")
DEFAULT_PROJECT = "qcbr"
DEFAULT_LOCAL_BUCKET = "qcbr-local"


@dataclass(frozen=True)
class Config:
    backend: str = "local"
    home: Path = field(default_factory=lambda: Path(".qcbr").resolve())
    project: str = DEFAULT_PROJECT
    bucket: str = DEFAULT_LOCAL_BUCKET
    user: str | None = None
    aws_region: str | None = None
    aws_role_arn: str | None = None
    aws_image_uri: str | None = None
    aws_instance_type: str = "ml.m5.large"
    aws_endpoint_url: str | None = None

    @property
    def s3_root(self) -> Path:
        """Where the local backend keeps object storage: s3://b/k <-> s3_root/b/k."""
        return self.home / "s3"


def _read_file(home: Path) -> dict:
    candidates = []
    if os.environ.get("QCBR_CONFIG"):
        candidates.append(Path(os.environ["QCBR_CONFIG"]))
    candidates += [home / "config.toml", Path("qcbr.toml")]
    for path in candidates:
        if path.is_file():
            try:
                with open(path, "rb") as fh:
                    data = tomllib.load(fh)
            except tomllib.TOMLDecodeError as exc:
                raise ConfigError(f"config file {path} is not valid TOML: {exc}; fix or remove it") from None
            if not isinstance(data, dict):
                raise ConfigError(f"config file {path} must hold key = value pairs")
            return {str(k).lower(): v for k, v in data.items()}
    if os.environ.get("QCBR_CONFIG") and not Path(os.environ["QCBR_CONFIG"]).is_file():
        raise ConfigError(f"QCBR_CONFIG points to {os.environ['QCBR_CONFIG']}, which does not exist")
    return {}


def load_config(env: dict[str, str] | None = None) -> Config:
    """Build the effective configuration; raises ConfigError with what to fix."""
    env = dict(os.environ if env is None else env)
    home = Path(env.get("QCBR_HOME") or ".qcbr").expanduser().resolve()
    file = _read_file(home)

    def pick(name: str, default=None):
        value = env.get(f"QCBR_{name.upper()}")
        if value in (None, ""):
            value = file.get(name, default)
        return value

    backend = str(pick("backend", "local")).lower()
    if backend not in BACKENDS:
        raise ConfigError(f"QCBR_BACKEND={backend!r} is not a backend; use 'local' (default) or 'aws'")
    project = str(pick("project", DEFAULT_PROJECT))
    if not project.replace("-", "").replace("_", "").isalnum() or len(project) > 40:
        raise ConfigError(
            f"QCBR_PROJECT={project!r} must be 1-40 letters, digits, '-' or '_' (it names buckets and groups)"
        )
    bucket = pick("aws_bucket") if backend == "aws" else pick("bucket", DEFAULT_LOCAL_BUCKET)
    return Config(
        backend=backend,
        home=home,
        project=project,
        bucket=str(bucket or ""),
        user=pick("user"),
        aws_region=env.get("AWS_DEFAULT_REGION") or env.get("AWS_REGION") or file.get("aws_region"),
        aws_role_arn=pick("aws_role_arn"),
        aws_image_uri=pick("aws_image_uri"),
        aws_instance_type=str(pick("aws_instance_type", "ml.m5.large")),
        aws_endpoint_url=env.get("AWS_ENDPOINT_URL") or file.get("aws_endpoint_url"),
    )
