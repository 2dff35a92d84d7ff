"""The aws backend: SageMaker training jobs, Model Registry and endpoints, S3, through boto3.

Importing this package does not import boto3; the backend loads it on its first AWS call.
"""
from __future__ import annotations

from qcbr.lifecycle.aws.backend import AwsBackend

__all__ = ["AwsBackend"]
