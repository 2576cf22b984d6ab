"""boto3 against Lambent's Lambda API: the founding document's create_function call
as written, invocations of its listener, and the operations around them."""
import base64
import io
import json
import os
import subprocess
import sys
import threading
import time
import zipfile

import botocore.exceptions
import pytest

from conftest import ROOT

SEED = os.path.join(ROOT, "examples", "seed-listener")
ROLE = "arn:aws:iam::123456789012:role/lambda_role"


def logged(node, function, prefix, within=60):
    """The JSON a function printed after `prefix`, waiting for it up to `within` seconds
    (None if it never came)."""
    import urllib.request
    deadline = time.time() + within
    while time.time() < deadline:
        listing = json.load(urllib.request.urlopen(f"{node}/v1/invocations?function={function}"))
        for inv in listing["invocations"]:
            for line in inv["logs"].splitlines():
                if line.startswith(prefix):
                    return json.loads(line[len(prefix):])
        time.sleep(0.1)
    return None


def zip_of(files):
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        for name, text in files.items():
            z.writestr(name, text)
    return buf.getvalue()


def test_the_founding_documents_registration_runs_as_written(node, lambda_client):
    # The example script is the document's call with a real zip for its S3 line.
    subprocess.run(
        [sys.executable, os.path.join(SEED, "register_with_boto3.py")],
        env=dict(os.environ, LAMBENT_URL=node), check=True,
    )
    f = lambda_client.get_function(FunctionName="event_listener")["Configuration"]
    assert f["Runtime"] == "python3.8"
    assert f["Handler"] == "event_listener.event_listener"
    assert f["Role"] == "arn:aws:iam::123456789012:role/lambda_role"
    assert f["Description"] == "An event listener function."
    assert f["State"] == "Active"
    # Each of the document's three event types runs its own branch.
    for ty, data in [
        ("user_action", {"user": "alice", "action": "login"}),
        ("data_update", {"table": "orders", "row": 7}),
        ("timer_trigger", {"schedule": "hourly"}),
    ]:
        r = lambda_client.invoke(
            FunctionName="event_listener",
            Payload=json.dumps({"type": ty, "data": data}),
            LogType="Tail",
        )
        assert r["StatusCode"] == 200
        assert "FunctionError" not in r
        log = base64.b64decode(r["LogResult"]).decode()
        assert f"{ty} handled: " in log, log
    lambda_client.get_waiter("function_active_v2").wait(FunctionName="event_listener")
    lambda_client.get_waiter("function_exists").wait(FunctionName="event_listener")


def test_create_get_update_invoke_delete(lambda_client):
    code = zip_of({"app.py": "def handler(event, context):\n    return {'got': event, 'fn': context.function_name}\n"})
    created = lambda_client.create_function(
        FunctionName="echo", Runtime="python3.11", Role=ROLE, Handler="app.handler",
        Code={"ZipFile": code}, Timeout=10, MemorySize=256,
        Environment={"Variables": {"GREETING": "hi"}},
    )
    assert created["FunctionArn"].endswith(":function:echo")
    assert created["MemorySize"] == 256 and created["Timeout"] == 10
    assert created["Environment"]["Variables"] == {"GREETING": "hi"}
    assert created["LastModified"].endswith("+0000")

    r = lambda_client.invoke(FunctionName="echo", Payload=b'{"n": 1}')
    assert json.loads(r["Payload"].read()) == {"got": {"n": 1}, "fn": "echo"}
    assert r["ExecutedVersion"] == "1"
    # By ARN, partial ARN, and with $LATEST.
    for name in ["arn:aws:lambda:us-east-1:123456789012:function:echo",
                 "123456789012:function:echo", "echo:$LATEST"]:
        assert lambda_client.invoke(FunctionName=name, Payload=b"{}")["StatusCode"] == 200

    updated = lambda_client.update_function_configuration(FunctionName="echo", Timeout=20)
    assert updated["Timeout"] == 20 and updated["MemorySize"] == 256
    code2 = zip_of({"app.py": "def handler(event, context):\n    return 'v3'\n"})
    lambda_client.update_function_code(FunctionName="echo", ZipFile=code2)
    r = lambda_client.invoke(FunctionName="echo", Payload=b"{}")
    assert json.loads(r["Payload"].read()) == "v3"
    # The first version still runs when asked for by number.
    r = lambda_client.invoke(FunctionName="echo", Qualifier="1", Payload=b'{"n": 2}')
    assert json.loads(r["Payload"].read())["got"] == {"n": 2}

    assert lambda_client.invoke(FunctionName="echo", InvocationType="DryRun")["StatusCode"] == 204
    assert lambda_client.invoke(FunctionName="echo", InvocationType="Event", Payload=b"{}")["StatusCode"] == 202

    lambda_client.delete_function(FunctionName="echo")
    with pytest.raises(lambda_client.exceptions.ResourceNotFoundException):
        lambda_client.get_function(FunctionName="echo")


def test_a_function_error_is_200_with_the_error_document(lambda_client):
    code = zip_of({"app.py": "def handler(event, context):\n    raise ValueError('bad input')\n"})
    lambda_client.create_function(FunctionName="fails", Runtime="python3.11", Role=ROLE,
                                  Handler="app.handler", Code={"ZipFile": code})
    r = lambda_client.invoke(FunctionName="fails", Payload=b"{}")
    assert r["StatusCode"] == 200
    assert r["FunctionError"] == "Unhandled"
    doc = json.loads(r["Payload"].read())
    assert doc["errorType"] == "ValueError" and doc["errorMessage"] == "bad input"


def test_errors_come_back_as_boto3_maps_them(lambda_client):
    code = zip_of({"app.py": "def handler(e, c):\n    return 1\n"})
    with pytest.raises(lambda_client.exceptions.ResourceNotFoundException):
        lambda_client.invoke(FunctionName="nobody", Payload=b"{}")
    lambda_client.create_function(FunctionName="dup", Runtime="python3.11", Role=ROLE,
                                  Handler="app.handler", Code={"ZipFile": code})
    with pytest.raises(lambda_client.exceptions.ResourceConflictException):
        lambda_client.create_function(FunctionName="dup", Runtime="python3.11", Role=ROLE,
                                      Handler="app.handler", Code={"ZipFile": code})
    bad = [
        dict(Role="not-an-arn"),
        dict(Code={"S3Bucket": "my-bucket", "S3Key": "code.zip"}),
        dict(Code={"ImageUri": "x"}),
        dict(Layers=["arn:aws:lambda:us-east-1:123456789012:layer:l:1"]),
        dict(Environment={"Variables": {"BIG": "x" * 5000}}),
        dict(Environment={"Variables": {"NUL": "a\0b"}}),
        dict(Runtime="cobol85"),
    ]
    for change in bad:
        args = dict(FunctionName="refused", Runtime="python3.11", Role=ROLE,
                    Handler="app.handler", Code={"ZipFile": code})
        args.update(change)
        with pytest.raises(botocore.exceptions.ClientError) as e:
            lambda_client.create_function(**args)
        assert e.value.response["Error"]["Code"] == "InvalidParameterValueException", change
        assert e.value.response["ResponseMetadata"]["HTTPHeaders"].get("x-amzn-requestid")
    with pytest.raises(lambda_client.exceptions.ResourceNotFoundException):
        lambda_client.get_function(FunctionName="refused")
    with pytest.raises(lambda_client.exceptions.InvalidParameterValueException):
        lambda_client.update_function_configuration(
            FunctionName="dup", Environment={"Variables": {"NUL": "a\0b"}})
    assert lambda_client.get_function(FunctionName="dup")["Configuration"].get("Environment") is None


def test_lambents_own_api_refuses_the_same_environments(node):
    import urllib.error
    import urllib.request
    code = base64.b64encode(zip_of({"app.py": "def handler(e, c):\n    return 1\n"})).decode()
    for env in [{"BIG": "x" * 5000}, {"NUL": "a\0b"}, {"V": "x" * (129 * 1024)}]:
        body = json.dumps({"runtime": "python3.11", "handler": "app.handler", "env": env,
                           "code_zip_base64": code}).encode()
        req = urllib.request.Request(f"{node}/v1/functions/own-door", data=body, method="PUT",
                                     headers={"content-type": "application/json"})
        with pytest.raises(urllib.error.HTTPError) as e:
            urllib.request.urlopen(req)
        assert e.value.code == 400
        assert "environment" in e.value.read().decode()


def test_listing_120_functions_pages_with_markers(lambda_client):
    code = zip_of({"app.py": "def handler(e, c):\n    return 1\n"})
    for i in range(120):
        lambda_client.create_function(FunctionName=f"page-{i:03}", Runtime="python3.11",
                                      Role=ROLE, Handler="app.handler", Code={"ZipFile": code})
    names = []
    for page in lambda_client.get_paginator("list_functions").paginate():
        assert len(page["Functions"]) <= 50
        names += [f["FunctionName"] for f in page["Functions"]]
    paged = [n for n in names if n.startswith("page-")]
    assert paged == [f"page-{i:03}" for i in range(120)]
    assert len(names) == len(set(names))
    settings = lambda_client.get_account_settings()
    assert settings["AccountUsage"]["FunctionCount"] >= 120


def test_an_invoke_retried_with_the_same_invocation_id_runs_once(node, lambda_client):
    code = zip_of({"app.py": "import uuid\ndef handler(e, c):\n    return str(uuid.uuid4())\n"})
    lambda_client.create_function(FunctionName="once", Runtime="python3.11", Role=ROLE,
                                  Handler="app.handler", Code={"ZipFile": code})
    import urllib.request

    def call(invocation_id):
        req = urllib.request.Request(
            f"{node}/2015-03-31/functions/once/invocations", data=b"{}", method="POST",
            headers={"amz-sdk-invocation-id": invocation_id})
        return urllib.request.urlopen(req).read()

    first = call("inv-1")
    again = call("inv-1")
    other = call("inv-2")
    assert first == again, "a retry returns the first result"
    assert other != first, "another invocation id runs again"


def test_every_deploy_is_a_version_that_can_be_published_listed_and_invoked(lambda_client):
    v1 = zip_of({"app.py": "def handler(e, c):\n    return 'one'\n"})
    v2 = zip_of({"app.py": "def handler(e, c):\n    return 'two'\n"})
    lambda_client.create_function(FunctionName="versions", Runtime="python3.11", Role=ROLE,
                                  Handler="app.handler", Code={"ZipFile": v1})
    lambda_client.update_function_code(FunctionName="versions", ZipFile=v2)
    published = lambda_client.publish_version(FunctionName="versions")
    assert published["Version"] == "2"
    listed = [v["Version"] for v in lambda_client.list_versions_by_function(FunctionName="versions")["Versions"]]
    assert listed == ["$LATEST", "1", "2"]
    for qualifier, answer in [("1", "one"), ("2", "two"), ("$LATEST", "two")]:
        r = lambda_client.invoke(FunctionName="versions", Qualifier=qualifier, Payload=b"{}")
        assert json.loads(r["Payload"].read()) == answer, qualifier
    with pytest.raises(lambda_client.exceptions.ResourceNotFoundException):
        lambda_client.invoke(FunctionName="versions", Qualifier="9", Payload=b"{}")
    with pytest.raises(lambda_client.exceptions.ResourceNotFoundException):
        lambda_client.invoke(FunctionName="versions", Qualifier="9", InvocationType="Event",
                             Payload=b"{}")


def test_an_event_invoke_of_a_version_runs_that_version(node, lambda_client):
    one = zip_of({"app.py": "def handler(e, c):\n    print('RAN \"one\"')\n"})
    two = zip_of({"app.py": "def handler(e, c):\n    print('RAN \"two\"')\n"})
    lambda_client.create_function(FunctionName="async-versions", Runtime="python3.11", Role=ROLE,
                                  Handler="app.handler", Code={"ZipFile": one})
    lambda_client.update_function_code(FunctionName="async-versions", ZipFile=two)
    r = lambda_client.invoke(FunctionName="async-versions", Qualifier="1",
                             InvocationType="Event", Payload=b"{}")
    assert r["StatusCode"] == 202
    assert logged(node, "async-versions", "RAN ") == "one"


def test_the_aws_cli_creates_lists_invokes_and_deletes(node, tmp_path):
    aws = os.path.join(os.path.dirname(sys.executable), "aws")
    env = dict(os.environ, AWS_ACCESS_KEY_ID="lambent", AWS_SECRET_ACCESS_KEY="lambent",
               AWS_DEFAULT_REGION="us-east-1", AWS_CONFIG_FILE=str(tmp_path / "none"))

    def cli(*args):
        out = subprocess.run([aws, "lambda", *args, "--endpoint-url", node],
                             env=env, capture_output=True, text=True)
        assert out.returncode == 0, out.stderr
        return out.stdout

    package = tmp_path / "code.zip"
    package.write_bytes(zip_of({"app.py": "def handler(e, c):\n    return {'hello': e.get('name')}\n"}))
    created = json.loads(cli("create-function", "--function-name", "from-cli", "--runtime", "python3.11",
                             "--role", ROLE, "--handler", "app.handler",
                             "--zip-file", f"fileb://{package}"))
    assert created["FunctionName"] == "from-cli"
    listed = json.loads(cli("list-functions"))
    assert "from-cli" in [f["FunctionName"] for f in listed["Functions"]]
    answer = tmp_path / "answer.json"
    invoked = json.loads(cli("invoke", "--function-name", "from-cli",
                             "--payload", '{"name": "cli"}', str(answer)))
    assert invoked["StatusCode"] == 200
    assert json.loads(answer.read_text()) == {"hello": "cli"}
    cli("delete-function", "--function-name", "from-cli")
    listed = json.loads(cli("list-functions"))
    assert "from-cli" not in [f["FunctionName"] for f in listed["Functions"]]


def test_a_weighted_alias_splits_calls_between_two_versions(lambda_client):
    one = zip_of({"app.py": "def handler(e, c):\n    return 'one'\n"})
    two = zip_of({"app.py": "def handler(e, c):\n    return 'two'\n"})
    lambda_client.create_function(FunctionName="canary", Runtime="python3.11", Role=ROLE,
                                  Handler="app.handler", Code={"ZipFile": one})
    lambda_client.update_function_code(FunctionName="canary", ZipFile=two)
    alias = lambda_client.create_alias(
        FunctionName="canary", Name="live", FunctionVersion="1",
        RoutingConfig={"AdditionalVersionWeights": {"2": 0.3}})
    assert alias["AliasArn"].endswith(":function:canary:live")
    assert lambda_client.get_alias(FunctionName="canary", Name="live")["RoutingConfig"] == {
        "AdditionalVersionWeights": {"2": 0.3}}
    counts = {"one": 0, "two": 0}
    for _ in range(1000):
        r = lambda_client.invoke(FunctionName="canary", Qualifier="live", Payload=b"{}")
        counts[json.loads(r["Payload"].read())] += 1
    # 300 expected; the binomial's standard deviation is 14.5: 5 of them either way.
    assert 228 <= counts["two"] <= 372, counts
    # The alias moves wholly to version 2; a call by ARN with the alias follows it.
    lambda_client.update_alias(FunctionName="canary", Name="live", FunctionVersion="2",
                               RoutingConfig={"AdditionalVersionWeights": {}})
    r = lambda_client.invoke(FunctionName="arn:aws:lambda:us-east-1:000000000000:function:canary:live",
                             Payload=b"{}")
    assert json.loads(r["Payload"].read()) == "two"
    assert [a["Name"] for a in lambda_client.list_aliases(FunctionName="canary")["Aliases"]] == ["live"]
    with pytest.raises(lambda_client.exceptions.ResourceConflictException):
        lambda_client.create_alias(FunctionName="canary", Name="live", FunctionVersion="1")
    with pytest.raises(lambda_client.exceptions.ResourceNotFoundException):
        lambda_client.create_alias(FunctionName="canary", Name="nine", FunctionVersion="9")
    lambda_client.delete_alias(FunctionName="canary", Name="live")
    with pytest.raises(lambda_client.exceptions.ResourceNotFoundException):
        lambda_client.invoke(FunctionName="canary", Qualifier="live", Payload=b"{}")


def test_a_failed_async_event_goes_to_its_on_failure_destination(node, lambda_client):
    failing = zip_of({"app.py": "def handler(e, c):\n    raise RuntimeError('no stock for ' + e['item'])\n"})
    record = zip_of({"app.py": "import json\ndef handler(e, c):\n    print('RECORD ' + json.dumps(e))\n"})
    lambda_client.create_function(FunctionName="on-failure", Runtime="python3.11", Role=ROLE,
                                  Handler="app.handler", Code={"ZipFile": record})
    lambda_client.create_function(FunctionName="orders", Runtime="python3.11", Role=ROLE,
                                  Handler="app.handler", Code={"ZipFile": failing})
    config = lambda_client.put_function_event_invoke_config(
        FunctionName="orders", MaximumRetryAttempts=0, MaximumEventAgeInSeconds=600,
        DestinationConfig={"OnFailure": {
            "Destination": "arn:aws:lambda:us-east-1:000000000000:function:on-failure"}})
    assert config["MaximumRetryAttempts"] == 0
    got = lambda_client.get_function_event_invoke_config(FunctionName="orders")
    assert got["DestinationConfig"]["OnFailure"]["Destination"].endswith(":function:on-failure")
    with pytest.raises(botocore.exceptions.ClientError) as e:
        lambda_client.put_function_event_invoke_config(FunctionName="orders", MaximumRetryAttempts=5)
    assert e.value.response["Error"]["Code"] in ("InvalidParameterValueException", "ParamValidationError")
    with pytest.raises(lambda_client.exceptions.InvalidParameterValueException):
        lambda_client.put_function_event_invoke_config(
            FunctionName="orders",
            DestinationConfig={"OnFailure": {"Destination": "arn:aws:sqs:us-east-1:000000000000:q"}})

    r = lambda_client.invoke(FunctionName="orders", InvocationType="Event",
                             Payload=json.dumps({"item": "book"}))
    assert r["StatusCode"] == 202
    import urllib.request
    record = logged(node, "on-failure", "RECORD ")
    assert record is not None, "the destination got the failure record"
    assert record["requestContext"]["condition"] == "RetriesExhausted"
    assert record["requestContext"]["approximateInvokeCount"] == 1
    assert record["requestPayload"] == {"item": "book"}
    assert record["responsePayload"]["errorMessage"] == "no stock for book"
    # The dead letter is kept as well.
    dlq = json.load(urllib.request.urlopen(f"{node}/v1/dlq?function=orders"))["dead_letters"]
    assert len(dlq) == 1


def ric_package(handler_module):
    """A `provided` zip running AWS's awslambdaric, packaged as on Lambda: the client
    and its dependencies in the code, run by the system Python of the venv's version."""
    import awslambdaric
    site = os.path.dirname(os.path.dirname(awslambdaric.__file__))
    version = "%d.%d" % sys.version_info[:2]
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        info = zipfile.ZipInfo("bootstrap")
        info.external_attr = 0o755 << 16
        z.writestr(info, "#!/bin/sh\nexport PYTHONPATH=\"$LAMBDA_TASK_ROOT\"\n"
                         f"exec python{version} -m awslambdaric \"$_HANDLER\"\n")
        z.writestr("app.py", handler_module)
        for entry in os.listdir(site):
            if entry.endswith(".dist-info") or not entry.startswith(
                    ("awslambdaric", "simplejson", "snapshot_restore_py", "runtime_client")):
                continue
            path = os.path.join(site, entry)
            if os.path.isfile(path):
                z.write(path, entry)
                continue
            for root, dirs, files in os.walk(path):
                dirs[:] = [d for d in dirs if d != "__pycache__"]
                for f in files:
                    full = os.path.join(root, f)
                    z.write(full, os.path.relpath(full, site))
    return buf.getvalue()


def test_awslambdaric_functions_answer_and_fail_as_lambda_reports(lambda_client):
    code = ric_package(
        "import time\n"
        "def ok(event, context):\n    return {'echo': event, 'id': context.aws_request_id}\n"
        "def fail(event, context):\n    raise KeyError('missing thing')\n"
        "def slow(event, context):\n    time.sleep(5)\n")
    for name, handler, timeout in [("ric-ok", "app.ok", 10), ("ric-fail", "app.fail", 10),
                                   ("ric-bad", "nomodule.handler", 10), ("ric-slow", "app.slow", 1)]:
        lambda_client.create_function(FunctionName=name, Runtime="provided.al2023", Role=ROLE,
                                      Handler=handler, Code={"ZipFile": code}, Timeout=timeout)
    r = lambda_client.invoke(FunctionName="ric-ok", Payload=b'{"hello": "ric"}')
    body = json.loads(r["Payload"].read())
    assert body["echo"] == {"hello": "ric"} and body["id"]
    assert "FunctionError" not in r

    cases = [("ric-fail", "KeyError"), ("ric-bad", "Runtime.ImportModuleError"),
             ("ric-slow", "Sandbox.Timedout")]
    for name, error_type in cases:
        r = lambda_client.invoke(FunctionName=name, Payload=b"{}")
        assert r["StatusCode"] == 200, name
        assert r["FunctionError"] == "Unhandled", name
        doc = json.loads(r["Payload"].read())
        assert doc["errorType"] == error_type, (name, doc)
    slow = json.loads(lambda_client.invoke(FunctionName="ric-slow", Payload=b"{}")["Payload"].read())
    assert "Task timed out after 1.00 seconds" in slow["errorMessage"], slow


def test_event_source_mappings_route_lambents_own_sources(node, lambda_client):
    import urllib.request
    code = zip_of({"app.py": "import json\ndef handler(e, c):\n    print('EVENT ' + json.dumps(e))\n"})
    lambda_client.create_function(FunctionName="kv-listener", Runtime="python3.11", Role=ROLE,
                                  Handler="app.handler", Code={"ZipFile": code})
    mapping = lambda_client.create_event_source_mapping(
        FunctionName="kv-listener", EventSourceArn="arn:lambent:kv:::carts")
    assert mapping["State"] == "Enabled"
    assert mapping["EventSourceArn"] == "arn:lambent:kv:::carts"
    listed = lambda_client.list_event_source_mappings(FunctionName="kv-listener")["EventSourceMappings"]
    assert [m["UUID"] for m in listed] == [mapping["UUID"]]
    assert lambda_client.get_event_source_mapping(UUID=mapping["UUID"])["FunctionArn"].endswith(":kv-listener")

    put = urllib.request.Request(f"{node}/v1/kv/carts/alice", data=b'{"items": 2}', method="PUT")
    urllib.request.urlopen(put).read()
    seen = logged(node, "kv-listener", "EVENT ")
    assert seen is not None and seen["data"]["value"] == {"items": 2}, seen

    with pytest.raises(lambda_client.exceptions.ResourceNotFoundException):
        lambda_client.create_event_source_mapping(
            FunctionName="kv-listener", EventSourceArn="arn:lambent:source:::nowhere")
    with pytest.raises(lambda_client.exceptions.InvalidParameterValueException):
        lambda_client.create_event_source_mapping(
            FunctionName="kv-listener", EventSourceArn="arn:aws:sqs:us-east-1:000000000000:q")
    assert lambda_client.delete_event_source_mapping(UUID=mapping["UUID"])["State"] == "Deleting"
    assert lambda_client.list_event_source_mappings(FunctionName="kv-listener")["EventSourceMappings"] == []


def test_a_function_built_with_the_lambda_runtime_crate(lambda_client):
    binary = os.environ.get("LAMBENT_RUST_FUNCTION")
    if not binary:
        assert not os.environ.get("LAMBENT_REQUIRE_SERVICES"), "LAMBENT_RUST_FUNCTION is required"
        pytest.skip("LAMBENT_RUST_FUNCTION not set (run ./scripts/test)")
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        info = zipfile.ZipInfo("bootstrap")
        info.external_attr = 0o755 << 16
        with open(binary, "rb") as f:
            z.writestr(info, f.read())
    lambda_client.create_function(FunctionName="rusty", Runtime="provided.al2023", Role=ROLE,
                                  Handler="bootstrap", Code={"ZipFile": buf.getvalue()}, Timeout=1)
    before_ms = int(time.time() * 1000)
    context = base64.b64encode(json.dumps({"client": {
        "installationId": "i-1", "appTitle": "shop", "appVersionName": "1.0",
        "appVersionCode": "1", "appPackageName": "com.example.shop"}, "custom": {}, "env": {}
    }).encode()).decode()
    r = lambda_client.invoke(FunctionName="rusty", Payload=b'{"n": 7}', ClientContext=context)
    assert "FunctionError" not in r
    body = json.loads(r["Payload"].read())
    assert body["event"] == {"n": 7}
    assert body["request_id"]
    assert body["function_arn"].endswith(":function:rusty")
    assert before_ms < int(body["deadline"]) <= before_ms + 1000 + 5000
    assert body["client_app"] == "shop"
    assert body["trace_id"], body
    # A partial client context is left out: the crate would exit on it.
    partial = base64.b64encode(b'{"client": {"appTitle": "x"}}').decode()
    r = lambda_client.invoke(FunctionName="rusty", Payload=b"{}", ClientContext=partial)
    assert json.loads(r["Payload"].read())["client_app"] is None
    # Its error and its timeout, as Lambda reports them.
    r = lambda_client.invoke(FunctionName="rusty", Payload=b'{"fail": "out of stock"}')
    assert r["FunctionError"] == "Unhandled"
    assert json.loads(r["Payload"].read())["errorMessage"] == "out of stock"
    r = lambda_client.invoke(FunctionName="rusty", Payload=b'{"sleep_ms": 3000}')
    assert r["FunctionError"] == "Unhandled"
    doc = json.loads(r["Payload"].read())
    assert doc["errorType"] == "Sandbox.Timedout", doc
    assert "Task timed out after 1.00 seconds" in doc["errorMessage"], doc
    # A process that exits before it asks for work fails the invocation, and says so.
    lambda_client.update_function_configuration(
        FunctionName="rusty", Environment={"Variables": {"FAIL_AT_INIT": "1"}})
    r = lambda_client.invoke(FunctionName="rusty", Payload=b"{}")
    assert r["FunctionError"] == "Unhandled"
    doc = json.loads(r["Payload"].read())
    assert doc["errorType"].startswith("Runtime."), doc


def test_tags_belong_to_the_function(lambda_client):
    code = zip_of({"app.py": "def handler(e, c):\n    return 1\n"})
    arn = lambda_client.create_function(FunctionName="tagged", Runtime="python3.11", Role=ROLE,
                                        Handler="app.handler", Code={"ZipFile": code},
                                        Tags={"team": "orders"})["FunctionArn"]
    assert lambda_client.get_function(FunctionName="tagged")["Tags"] == {"team": "orders"}
    lambda_client.tag_resource(Resource=arn, Tags={"env": "test", "team": "shop"})
    assert lambda_client.list_tags(Resource=arn)["Tags"] == {"env": "test", "team": "shop"}
    lambda_client.untag_resource(Resource=arn, TagKeys=["env"])
    assert lambda_client.list_tags(Resource=arn)["Tags"] == {"team": "shop"}
    # Tagging does not make a version.
    versions = lambda_client.list_versions_by_function(FunctionName="tagged")["Versions"]
    assert [v["Version"] for v in versions] == ["$LATEST", "1"]
    with pytest.raises(lambda_client.exceptions.InvalidParameterValueException):
        lambda_client.tag_resource(Resource=arn, Tags={"aws:owner": "x"})


def test_bad_tags_refuse_the_create_and_make_nothing(lambda_client):
    code = zip_of({"app.py": "def handler(e, c):\n    return 1\n"})
    with pytest.raises(lambda_client.exceptions.InvalidParameterValueException):
        lambda_client.create_function(FunctionName="badly-tagged", Runtime="python3.11", Role=ROLE,
                                      Handler="app.handler", Code={"ZipFile": code},
                                      Tags={"aws:owner": "x"})
    with pytest.raises(lambda_client.exceptions.ResourceNotFoundException):
        lambda_client.get_function(FunctionName="badly-tagged")


def test_the_deprecated_invoke_async_queues_the_event(node, lambda_client):
    code = zip_of({"app.py": "import json\ndef handler(e, c):\n    print('GOT ' + json.dumps(e))\n"})
    lambda_client.create_function(FunctionName="old-style", Runtime="python3.11", Role=ROLE,
                                  Handler="app.handler", Code={"ZipFile": code})
    r = lambda_client.invoke_async(FunctionName="old-style", InvokeArgs=b'{"legacy": true}')
    assert r["Status"] == 202
    assert logged(node, "old-style", "GOT ") == {"legacy": True}
