"""A real Lambent node for the compatibility tests, and boto3 pointed at it.

The node is the `lambent` binary the test command built (LAMBENT_BIN, else
target/debug/lambent), on free ports with a temporary data directory.
"""
import os
import socket
import subprocess
import tempfile

import boto3
import botocore.config
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def node():
    binary = os.environ.get("LAMBENT_BIN", os.path.join(ROOT, "target", "debug", "lambent"))
    data = tempfile.mkdtemp(prefix="lambent-compat-")
    proc = subprocess.Popen(
        [binary, "serve", "--listen", "127.0.0.1:0", "--http-listen", "127.0.0.1:0",
         "--data-dir", os.path.join(data, "data")],
        stdout=subprocess.PIPE, stderr=open(os.path.join(data, "node.log"), "w"),
        env=dict(os.environ, LAMBENT_LOG="warn"), text=True,
    )
    url = proc.stdout.readline().strip().removeprefix("lambent: control API on ")
    proc.stdout.readline()
    yield url
    proc.kill()
    proc.wait()


@pytest.fixture(scope="session")
def lambda_client(node):
    return boto3.client(
        "lambda",
        endpoint_url=node,
        region_name="us-east-1",
        aws_access_key_id="lambent",
        aws_secret_access_key="lambent",
        config=botocore.config.Config(retries={"max_attempts": 0}),
    )
