"""Lambent's Python bootstrap: the AWS Lambda Runtime API client loop, stdlib only.

Started once per instance with the function's code directory as LAMBDA_TASK_ROOT.
It imports the handler named by _HANDLER ("module.function"), then asks the runtime
API for invocations forever, answering each with the handler's result or error.
Kept free of heavy imports: every millisecond here is a cold-start millisecond.
"""
import http.client
import importlib
import json
import os
import sys
import time
import traceback

API = os.environ["AWS_LAMBDA_RUNTIME_API"]
BASE = "/2018-06-01/runtime"


class LambdaContext:
    """The context object handlers receive, with the attributes AWS documents."""

    def __init__(self, headers):
        self.aws_request_id = headers.get("Lambda-Runtime-Aws-Request-Id", "")
        self.invoked_function_arn = headers.get("Lambda-Runtime-Invoked-Function-Arn", "")
        self.function_name = os.environ.get("AWS_LAMBDA_FUNCTION_NAME", "")
        self.function_version = os.environ.get("AWS_LAMBDA_FUNCTION_VERSION", "$LATEST")
        self.memory_limit_in_mb = os.environ.get("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "128")
        self.log_group_name = os.environ.get("AWS_LAMBDA_LOG_GROUP_NAME", "")
        self.log_stream_name = os.environ.get("AWS_LAMBDA_LOG_STREAM_NAME", "")
        self._deadline_ms = int(headers.get("Lambda-Runtime-Deadline-Ms", "0") or 0)
        self.trace_id = headers.get("Lambda-Runtime-Trace-Id")
        # Lambent's additions: which event and which attempt this is, for idempotency.
        self.event_id = headers.get("Lambent-Event-Id")
        self.attempt = int(headers.get("Lambent-Attempt", "1") or 1)
        self.identity = None
        cc = headers.get("Lambda-Runtime-Client-Context")
        self.client_context = json.loads(cc) if cc else None

    def get_remaining_time_in_millis(self):
        return max(self._deadline_ms - int(time.time() * 1000), 0)


def flush():
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except Exception:
            pass


class Client:
    def __init__(self):
        self.conn = http.client.HTTPConnection(API)

    def request(self, method, path, body=None, headers=None):
        for attempt in range(2):
            try:
                self.conn.request(method, BASE + path, body=body, headers=headers or {})
                resp = self.conn.getresponse()
                return resp, resp.read()
            except (ConnectionError, http.client.HTTPException):
                self.conn.close()
                self.conn = http.client.HTTPConnection(API)
                if attempt:
                    raise

    def post(self, path, payload, headers=None):
        flush()
        h = {"Content-Type": "application/json"}
        h.update(headers or {})
        self.request("POST", path, payload, h)


def error_body(exc, request_id=None):
    tb = traceback.format_exception(type(exc), exc, exc.__traceback__)
    body = {
        "errorMessage": str(exc),
        "errorType": type(exc).__name__,
        "stackTrace": [line.rstrip("\n") for line in traceback.format_tb(exc.__traceback__)],
    }
    if request_id:
        body["requestId"] = request_id
    # Lambda writes the error to the function's log as well.
    sys.stderr.write("[ERROR] %s: %s\n%s" % (type(exc).__name__, exc, "".join(tb)))
    return json.dumps(body).encode()


def load_handler(client):
    spec = os.environ.get("_HANDLER", "")
    module_name, _, function_name = spec.rpartition(".")
    try:
        if not module_name:
            raise ValueError("Bad handler '%s': expected module.function" % spec)
        module = importlib.import_module(module_name.replace("/", "."))
    except Exception as exc:
        err = json.loads(error_body(exc))
        err["errorType"] = "Runtime.ImportModuleError"
        err["errorMessage"] = "Unable to import module '%s': %s" % (module_name, exc)
        client.post("/init/error", json.dumps(err).encode(),
                    {"Lambda-Runtime-Function-Error-Type": "Runtime.ImportModuleError"})
        sys.exit(1)
    handler = getattr(module, function_name, None)
    if not callable(handler):
        err = {"errorType": "Runtime.HandlerNotFound",
               "errorMessage": "Handler '%s' missing on module '%s'" % (function_name, module_name),
               "stackTrace": []}
        sys.stderr.write("[ERROR] Runtime.HandlerNotFound: %s\n" % err["errorMessage"])
        client.post("/init/error", json.dumps(err).encode(),
                    {"Lambda-Runtime-Function-Error-Type": "Runtime.HandlerNotFound"})
        sys.exit(1)
    return handler


def main():
    task_root = os.environ.get("LAMBDA_TASK_ROOT", os.getcwd())
    if task_root not in sys.path:
        sys.path.insert(0, task_root)
    client = Client()
    handler = load_handler(client)
    while True:
        resp, body = client.request("GET", "/invocation/next")
        if resp.status != 200:
            sys.stderr.write("lambent bootstrap: /next answered %d\n" % resp.status)
            sys.exit(1)
        headers = {k: v for k, v in resp.getheaders()}
        headers = {k.title(): v for k, v in headers.items()}
        context = LambdaContext(headers)
        request_id = context.aws_request_id
        try:
            text = body.decode("utf-8")
            try:
                event = json.loads(text) if text else None
            except ValueError:
                event = text
            result = handler(event, context)
            payload = json.dumps(result).encode()
        except Exception as exc:
            client.post("/invocation/%s/error" % request_id, error_body(exc, request_id),
                        {"Lambda-Runtime-Function-Error-Type": "Unhandled"})
            continue
        client.post("/invocation/%s/response" % request_id, payload)


if __name__ == "__main__":
    main()
