"""The registry's storage in an S3-compatible bucket (`mirror.s3`): the client the mirror reaches it with.

boto3 is synchronous: callers on the event loop run it in a thread; it is imported when a bucket is used, so the
commands that never touch one do not pay for it. With an endpoint, addressing is path style, as the registry's
driver's; the store's CA, when given, is trusted on top of the system's.
"""
from __future__ import annotations

import contextlib
import logging
import os
import tempfile
import time
from collections.abc import Iterator
from pathlib import PurePosixPath
from typing import Any

from registry_mirror.config.load import S3Config
from registry_mirror.oci.digests import digest_hasher
from registry_mirror.redact import error_text
from registry_mirror.storage import quarantine
from registry_mirror.storage.bucket_store import PARALLEL_READS, BucketStore
from registry_mirror.storage.layout import BLOBS, V2, blob_data, stored_file
from registry_mirror.storage.verify import CHUNK, Checked, checkable
from registry_mirror.tls.certs import CertError, ca_bundle, system_ca_file

log = logging.getLogger(__name__)

TIMEOUT_SECONDS = 10.0  # connect and read, each; a check or a read waits no longer for a dead store
PROBE_SECONDS = 2.0  # a blob's HEAD before a fill: a store slower than that, and the upstream is asked
READ_ATTEMPTS = 3  # the blob path's reads: a LAN store's hiccup is retried


class BucketError(RuntimeError):
    pass


@contextlib.contextmanager
def trusted_cas(s3: S3Config) -> Iterator[bool | str]:
    """botocore's `verify` while in the block: the system's CAs (botocore's default is certifi's, not the
    system's), plus `ca_file` in a private file of a unique name (read at each new connection, so it lives as long
    as the client does)."""
    if not s3.ca_file:
        yield system_ca_file() or True
        return
    try:
        pem = ca_bundle(s3.ca_file)
    except CertError as e:
        raise BucketError(f"mirror.s3.ca_file: {e}") from e
    fd, path = tempfile.mkstemp(prefix="artifactory-mirror-s3-ca-", suffix=".pem")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(pem)
        yield path
    finally:
        os.unlink(path)


def client(s3: S3Config, verify: bool | str, attempts: int = READ_ATTEMPTS, timeout: float = TIMEOUT_SECONDS) -> Any:
    """A boto3 S3 client for `s3`'s bucket (credentials from the config, else the AWS chain)."""
    import boto3
    import botocore.config

    keys = {"aws_access_key_id": str(s3.credentials[0]), "aws_secret_access_key": str(s3.credentials[1])} \
        if s3.credentials else {}
    config = botocore.config.Config(s3={"addressing_style": "path"} if s3.endpoint else {},
                                    connect_timeout=timeout, read_timeout=timeout,
                                    max_pool_connections=PARALLEL_READS,  # botocore's 10 would drop connections
                                    retries={"mode": "standard", "total_max_attempts": attempts})
    return boto3.session.Session().client("s3", endpoint_url=s3.endpoint, region_name=s3.region, verify=verify,
                                          config=config, **keys)


def reach(s3: S3Config) -> None:
    """Ask for the bucket once (HeadBucket): raises BucketError saying what failed and what to check."""
    import botocore.exceptions

    where = f"bucket {s3.bucket!r} at {s3.endpoint or 'AWS S3'}"
    try:
        with trusted_cas(s3) as verify:
            answer = client(s3, verify, attempts=1).head_bucket(Bucket=s3.bucket)
    except botocore.exceptions.ClientError as e:
        code = str(e.response.get("Error", {}).get("Code", ""))
        hint = {"404": "it does not exist: create it", "NoSuchBucket": "it does not exist: create it",
                "403": "access denied: check mirror.s3's keys and the bucket's policy (list, get, put, delete)",
                "AccessDenied": "access denied: check mirror.s3's keys and the bucket's policy",
                "301": "the store redirects: is the endpoint's scheme (http or https) and mirror.s3.region right?",
                "400": "the store refused the request: is mirror.s3.region the bucket's?"}.get(
                    code, f"the store answered {code}")
        raise BucketError(f"mirror.s3: {where}: {hint}") from e
    except botocore.exceptions.NoCredentialsError as e:
        raise BucketError(f"mirror.s3: no credentials for the {where}: set access_key and secret_key, or give "
                          "the AWS environment variables, shared credentials file or instance role") from e
    except BucketError:
        raise
    except Exception as e:  # whatever else boto3 raises (a redirect loop included) is a failed check, said so
        raise BucketError(f"mirror.s3: cannot reach the {where}: {error_text(e)}; check endpoint, ca_file and "
                          "the network") from e
    if problem := wrong_region(s3, answer.get("ResponseMetadata", {}).get("HTTPHeaders", {})):
        raise BucketError(problem)


def wrong_region(s3: S3Config, answer_headers: dict) -> str | None:
    """On AWS, boto3 follows a redirect to the bucket's region and the registry's driver does not: a region other
    than the bucket's passes a check and fails every request of the registry."""
    region = answer_headers.get("x-amz-bucket-region")
    if s3.endpoint or not region or region == s3.region:
        return None
    return f"mirror.s3.region: {s3.region!r}, but the bucket {s3.bucket!r} is in {region!r}: set region: {region}"


class Bucket:
    """The registry's storage in the bucket, as the blob path reads it: blob data by digest (the registry's own
    layout, under `prefix`). Calls block: run them in a thread."""

    def __init__(self, s3: S3Config, client_factory=client):
        self.s3, self.name = s3, s3.bucket
        self.root = PurePosixPath(s3.prefix) / V2 if s3.prefix else PurePosixPath(V2)
        self._cas = contextlib.ExitStack()  # the CA file lives as long as the clients
        try:
            cas = self._cas.enter_context(trusted_cas(s3))
            self._client = client_factory(s3, cas)
            self._probe = client_factory(s3, cas, attempts=1, timeout=PROBE_SECONDS)
        except BaseException:
            self._cas.close()
            raise

    def close(self) -> None:
        self._cas.close()

    def store(self, under: str = "") -> BucketStore:
        """The storage seam on this bucket (storage/store.py): the registry's storage, or `under` beside it."""
        return BucketStore(self._client, self.name, "/".join(p for p in (self.s3.prefix, under) if p))

    def blob_key(self, digest: str) -> str:
        return str(self.root / blob_data(digest))

    def blob_size(self, digest: str) -> int | None:
        """The size of the blob's data object, or None when the bucket has none (or cannot say)."""
        try:
            return int(self._probe.head_object(Bucket=self.name, Key=self.blob_key(digest))["ContentLength"])
        except Exception:  # not there, or not reachable: the upstream is asked instead
            return None

    def open_blob(self, digest: str) -> Any:
        """The blob's data as a stream with `read(n)` and `close()`; BucketError when it cannot be read."""
        try:
            return self._client.get_object(Bucket=self.name, Key=self.blob_key(digest))["Body"]
        except Exception as e:
            raise BucketError(f"cannot read {digest} from bucket {self.name!r}: {error_text(e)}") from e

    def blob_digests(self) -> Iterator[str]:
        """Every blob data object's digest the storage holds that the mirror can check, as listed."""
        for entry in self.store().files(BLOBS):
            found = stored_file(entry.path)
            if found is not None and not found[1] and checkable(found[0]):
                yield found[0]

    def verify_storage(self) -> Iterator[Checked]:
        """One pass over every blob data object (storage/verify.verify_storage's, on the bucket); objects removed
        during the pass are skipped."""
        for digest in self.blob_digests():
            if (checked := self.verify_blob(digest)) is not None:
                yield checked

    def verify_blob(self, digest: str) -> Checked | None:
        """Hash the blob's object to its end, one CHUNK at a time; a mismatch is moved aside. None when it is
        gone."""
        try:
            body = self.open_blob(digest)
        except BucketError:
            return None
        hasher, size = digest_hasher(digest), 0
        try:
            while chunk := body.read(CHUNK):
                hasher.update(chunk)
                size += len(chunk)
        except Exception as e:
            return Checked(digest, size, f"unreadable: {error_text(e)}")
        finally:
            body.close()
        actual = f"{hasher.name}:{hasher.hexdigest()}"
        return Checked(digest, size, actual, None if actual == digest else self.quarantine(digest))

    def abort_stale_uploads(self, older_than: float, now: float) -> int:
        """Abort the multipart uploads under the storage begun `older_than` seconds or more before `now`: what a
        registry stopped mid-upload leaves, invisible to a listing and to its purger, and paid for all the same.
        How many went."""
        aborted = 0
        pages = self._client.get_paginator("list_multipart_uploads").paginate(Bucket=self.name,
                                                                               Prefix=f"{self.root}/")
        for page in pages:
            for upload in page.get("Uploads", []):
                if now - upload["Initiated"].timestamp() < older_than:
                    continue
                try:
                    self._client.abort_multipart_upload(Bucket=self.name, Key=upload["Key"],
                                                        UploadId=upload["UploadId"])
                    aborted += 1
                except Exception as e:  # another replica's sweep took it first, or the store refused
                    log.warning("cannot abort the upload %s of %s: %s", upload["UploadId"], upload["Key"],
                                error_text(e))
        return aborted

    def quarantine(self, digest: str) -> str | None:
        """Move a blob whose bytes failed their digest out of the registry's sight (`quarantine/`, as on disk):
        its next pull fetches a good copy. Where it went, or None when it could not be moved."""
        key, now = self.blob_key(digest), time.time()
        target = str(self.root / "quarantine" / quarantine.file_name(digest, now))
        try:
            self._client.copy_object(Bucket=self.name, Key=target, CopySource={"Bucket": self.name, "Key": key})
        except Exception as e:  # over CopyObject's 5 GiB, say: it goes all the same, or it fails every pull
            log.error("cannot copy the corrupt %s to %s (%s): deleting it", key, target, error_text(e))
            target = ""
        try:
            self._client.delete_object(Bucket=self.name, Key=key)
        except Exception as e:
            log.error("cannot delete the corrupt %s: %s; it fails every pull that needs it until removed", key,
                      error_text(e))
            return None
        return target or None
