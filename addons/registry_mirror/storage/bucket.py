"""The registry's storage in an S3-compatible bucket (`mirror.s3`): the client the mirror reaches it with.

boto3 is synchronous: callers on the event loop run it in a thread. Addressing is path style, as the registry's
driver uses with any endpoint; the store's CA, when given, is trusted on top of the system's.
"""
from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import boto3
import botocore.config
import botocore.exceptions

from registry_mirror.config.load import S3Config
from registry_mirror.redact import error_text
from registry_mirror.tls.certs import write_ca_bundle

TIMEOUT_SECONDS = 10.0  # connect and read, each; a check or a listing waits no longer for a dead store


class BucketError(RuntimeError):
    pass


def client(s3: S3Config, ca_bundle_dir: Path | None = None) -> Any:
    """A boto3 S3 client for `s3`'s bucket (credentials from the config, else the AWS chain)."""
    verify: bool | str = True
    if s3.ca_file:  # botocore's `verify` replaces the system's CAs: bundle both
        folder = ca_bundle_dir or Path(tempfile.gettempdir())
        verify = str(write_ca_bundle(s3.ca_file, folder / "artifactory-mirror-s3-ca.pem"))
    keys = {"aws_access_key_id": str(s3.credentials[0]), "aws_secret_access_key": str(s3.credentials[1])} \
        if s3.credentials else {}
    config = botocore.config.Config(s3={"addressing_style": "path"}, connect_timeout=TIMEOUT_SECONDS,
                                    read_timeout=TIMEOUT_SECONDS, retries={"max_attempts": 2})
    return boto3.session.Session().client("s3", endpoint_url=s3.endpoint, region_name=s3.region, verify=verify,
                                          config=config, **keys)


def reach(s3: S3Config) -> None:
    """Ask for the bucket once (HeadBucket): raises BucketError saying what failed and what to check."""
    where = f"bucket {s3.bucket!r} at {s3.endpoint or 'AWS S3'}"
    try:
        client(s3).head_bucket(Bucket=s3.bucket)
    except botocore.exceptions.ClientError as e:
        code = str(e.response.get("Error", {}).get("Code", ""))
        hint = {"404": "it does not exist: create it", "NoSuchBucket": "it does not exist: create it",
                "403": "access denied: check mirror.s3's keys and the bucket's policy (list, get, put, delete)",
                "AccessDenied": "access denied: check mirror.s3's keys and the bucket's policy"}.get(code, code)
        raise BucketError(f"mirror.s3: {where}: {hint}") from e
    except (botocore.exceptions.BotoCoreError, OSError) as e:
        raise BucketError(f"mirror.s3: cannot reach the {where}: {error_text(e)}; check endpoint, ca_file and "
                          "the network") from e
