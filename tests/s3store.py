"""moto's standalone S3 server on 127.0.0.1 (the server s3fs's own tests run against), one per test session.

Everything reaches it the way a user's tools reach S3: through the AWS_* environment (endpoint, keys,
region), which s3fs, boto3 and every subprocess a test starts (parts, Ray workers) read themselves.
"""

from __future__ import annotations

import itertools
import logging
import os
from typing import Any

ENV = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1"}
_buckets = itertools.count()
_server: dict[str, Any] = {}


def endpoint() -> str:
    """Start the server once (a thread of this process) and return its URL."""
    if "url" not in _server:
        from moto.server import ThreadedMotoServer

        logging.getLogger("werkzeug").setLevel(logging.ERROR)  # one line per request otherwise
        server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
        server.start()
        host, port = server.get_host_and_port()
        _server.update(server=server, url=f"http://{host}:{port}")
    return _server["url"]


def environment() -> dict[str, str]:
    return {**ENV, "AWS_ENDPOINT_URL": endpoint()}


def new_bucket() -> str:
    """A fresh, empty bucket; returns its s3:// URL."""
    import boto3

    name = f"tagllm-test-{os.getpid()}-{next(_buckets)}"
    boto3.client("s3", endpoint_url=endpoint(), **{k.lower(): v for k, v in ENV.items()
                                                    if k != "AWS_DEFAULT_REGION"},
                 region_name=ENV["AWS_DEFAULT_REGION"]).create_bucket(Bucket=name)
    return f"s3://{name}"


def clear_fs_cache() -> None:
    """fsspec keeps one filesystem object (and its listings) per set of options: start each test clean."""
    try:
        import s3fs

        s3fs.S3FileSystem.clear_instance_cache()
    except ImportError:
        pass
