"""Create the artifact bucket named in KONAN_ARTIFACTS__URI (s3://bucket/prefix) if it is missing.

Run once by the `s3-init` service in docker-compose.yml, from the Konan image (boto3 is a Konan
dependency). Waits for the S3 endpoint with a deadline, so it can start together with the store.
Exit status 0 when the bucket exists afterwards; 1 with a message otherwise.
"""

from __future__ import annotations

import os
import sys
import time
from typing import Any
from urllib.parse import urlparse

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

DEADLINE_SECONDS = float(os.environ.get("S3_INIT_TIMEOUT_SECONDS", "120"))


def main() -> int:
    uri = os.environ.get("KONAN_ARTIFACTS__URI", "")
    parsed = urlparse(uri)
    if parsed.scheme != "s3" or not parsed.netloc:
        print(
            f"KONAN_ARTIFACTS__URI must look like s3://bucket/prefix, got {uri!r}", file=sys.stderr
        )
        return 1
    bucket = parsed.netloc
    endpoint = os.environ.get("KONAN_ARTIFACTS__S3_ENDPOINT_URL") or None
    region = os.environ.get("KONAN_ARTIFACTS__S3_REGION", "us-east-1")
    # AWS wants the region spelled out for every region but us-east-1.
    create_args: dict[str, Any] = {"Bucket": bucket}
    if region != "us-east-1":
        create_args["CreateBucketConfiguration"] = {"LocationConstraint": region}
    client = boto3.client(
        "s3",
        endpoint_url=endpoint,
        region_name=region,
        aws_access_key_id=os.environ.get("KONAN_ARTIFACTS__S3_ACCESS_KEY_ID"),
        aws_secret_access_key=os.environ.get("KONAN_ARTIFACTS__S3_SECRET_ACCESS_KEY"),
        config=Config(
            s3={"addressing_style": "path"},
            retries={"mode": "standard", "max_attempts": 3},
            connect_timeout=5,
            read_timeout=30,
        ),
    )

    deadline = time.monotonic() + DEADLINE_SECONDS
    last_error: Exception | None = None
    while time.monotonic() < deadline:
        try:
            client.head_bucket(Bucket=bucket)
            print(f"bucket {bucket!r} exists at {endpoint or 'AWS'}")
            return 0
        except ClientError as exc:
            code = str(exc.response.get("Error", {}).get("Code", ""))
            if code in {"404", "NoSuchBucket", "NotFound"}:
                try:
                    client.create_bucket(**create_args)
                except ClientError as create_exc:
                    create_code = create_exc.response.get("Error", {}).get("Code", "")
                    if create_code not in {"BucketAlreadyOwnedByYou", "BucketAlreadyExists"}:
                        last_error = create_exc
                        time.sleep(2)
                        continue
                print(f"created bucket {bucket!r} at {endpoint or 'AWS'}")
                return 0
            # Anything else (403 while the store is still loading its identities, 5xx) is retried
            # until the deadline; the last error is reported if it never clears.
            last_error = exc
        except BotoCoreError as exc:  # endpoint not up yet: connection refused, timeouts
            last_error = exc
        time.sleep(2)
    print(
        f"S3 endpoint {endpoint} not usable within {DEADLINE_SECONDS:.0f}s: {last_error}",
        file=sys.stderr,
    )
    return 1


if __name__ == "__main__":
    sys.exit(main())
