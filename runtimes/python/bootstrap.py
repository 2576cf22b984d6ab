"""Lambent's Python bootstrap: the AWS Lambda Runtime API client loop, stdlib only.

Started once per instance with the function's code directory as LAMBDA_TASK_ROOT.
It imports the handler named by _HANDLER ("module.function"), then asks the runtime
API for invocations forever, answering each with the handler's result or error.
Kept free of heavy imports: every millisecond here is a cold-start millisecond.
That is why it speaks HTTP/1.1 over a plain socket (http.client alone costs ~25 ms
of imports) and imports traceback only when something fails. Lambent starts it with
`python -S` and the host's site-packages on PYTHONPATH, which skips the .pth
processing of `site` (~35 ms on these machines).

In a sandbox, a spare may start it before its function is known, with
LAMBENT_PRESTART_FD naming a socket: it imports what it needs, then waits there for
its assignment (environment, working directory and the Landlock ruleset it
restricts itself with; the sandbox sets its limits) before it reads any of the
function's settings or code.
"""
import importlib
import json
import os
import socket
import sys
import time

BASE = "/2018-06-01/runtime"


class LambdaContext:
    """The context object handlers receive, with the attributes AWS documents."""

    def __init__(self, headers):
        # `headers` has lower-case names.
        self.aws_request_id = headers.get("lambda-runtime-aws-request-id", "")
        self.invoked_function_arn = headers.get("lambda-runtime-invoked-function-arn", "")
        self.function_name = os.environ.get("AWS_LAMBDA_FUNCTION_NAME", "")
        self.function_version = os.environ.get("AWS_LAMBDA_FUNCTION_VERSION", "$LATEST")
        self.memory_limit_in_mb = os.environ.get("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "128")
        self.log_group_name = os.environ.get("AWS_LAMBDA_LOG_GROUP_NAME", "")
        self.log_stream_name = os.environ.get("AWS_LAMBDA_LOG_STREAM_NAME", "")
        self._deadline_ms = int(headers.get("lambda-runtime-deadline-ms", "0") or 0)
        self.trace_id = headers.get("lambda-runtime-trace-id")
        # Lambent's additions: which event and which attempt this is, for idempotency.
        self.event_id = headers.get("lambent-event-id")
        self.attempt = int(headers.get("lambent-attempt", "1") or 1)
        self.identity = None
        cc = headers.get("lambda-runtime-client-context")
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
    """A minimal HTTP/1.1 client with one keep-alive connection to the Runtime API."""

    def __init__(self):
        self.api = os.environ["AWS_LAMBDA_RUNTIME_API"]
        host, _, port = self.api.rpartition(":")
        self.addr = (host, int(port))
        self.sock = None
        self.rfile = None

    def close(self):
        if self.sock is not None:
            try:
                self.sock.close()
            except OSError:
                pass
        self.sock = None
        self.rfile = None

    def request(self, method, path, body=b"", headers=None):
        head = "%s %s%s HTTP/1.1\r\nHost: %s\r\nContent-Length: %d\r\n" % (
            method, BASE, path, self.api, len(body))
        for name, value in (headers or {}).items():
            head += "%s: %s\r\n" % (name, value)
        data = head.encode("latin-1") + b"\r\n" + body
        for attempt in range(2):
            try:
                if self.sock is None:
                    self.sock = socket.create_connection(self.addr)
                    self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                    self.rfile = self.sock.makefile("rb")
                self.sock.sendall(data)
                return self.read_response()
            except (OSError, ValueError):
                self.close()
                if attempt:
                    raise

    def read_response(self):
        line = self.rfile.readline()
        if not line:
            raise ConnectionError("runtime API closed the connection")
        status = int(line.split()[1])
        headers = {}
        while True:
            line = self.rfile.readline()
            if line in (b"\r\n", b"\n", b""):
                break
            name, _, value = line.decode("latin-1").partition(":")
            headers[name.strip().lower()] = value.strip()
        if headers.get("transfer-encoding", "").lower() == "chunked":
            parts = []
            while True:
                size = int(self.rfile.readline().split(b";")[0], 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    break
                parts.append(self.rfile.read(size))
                self.rfile.readline()
            body = b"".join(parts)
        else:
            body = self.rfile.read(int(headers.get("content-length", "0")))
        if headers.get("connection", "").lower() == "close":
            self.close()
        return status, headers, body

    def post(self, path, payload, headers=None):
        flush()
        h = {"Content-Type": "application/json"}
        h.update(headers or {})
        self.request("POST", path, payload, h)


def error_body(exc, request_id=None):
    import traceback

    # Leave out the bootstrap's own frame: the trace starts in the user's code.
    user_tb = exc.__traceback__.tb_next if request_id and exc.__traceback__ else exc.__traceback__
    tb = traceback.format_exception(type(exc), exc, user_tb)
    body = {
        "errorMessage": str(exc),
        "errorType": type(exc).__name__,
        "stackTrace": [line.rstrip("\n") for line in traceback.format_tb(user_tb)],
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


def take_assignment(fd):
    """A pre-started runtime's wait for its function (see the module's doc)."""
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    # First uses that cost a millisecond each, paid now: the compiler's (the handler's
    # module is compiled from source: the code is read-only, there is no cache) and
    # the name resolver's (create_connection loads the C library's NSS modules).
    compile("pass", "<prestart>", "exec")
    socket.getaddrinfo("127.0.0.1", 9001, 0, socket.SOCK_STREAM)
    channel = socket.socket(fileno=fd)
    channel.send(b"\x01")  # started: the sandbox may finish its root now
    message, fds, _, _ = socket.recv_fds(channel, 1 << 20, 1)
    channel.close()
    if not message:
        sys.exit(0)  # the sandbox went away unused
    assignment = json.loads(message)
    for ruleset in fds:
        # landlock_restrict_self(2), before anything of the function is read.
        if libc.syscall(446, ruleset, 0) != 0:
            err = ctypes.get_errno()
            raise OSError(err, "landlock_restrict_self: " + os.strerror(err))
        os.close(ruleset)
    os.chdir(assignment["cwd"])
    env = {}
    for name, value in assignment["env"]:
        env.setdefault(name, value)  # the first wins, as for an executed program
    # Only what differs: each change is a putenv.
    for name in [name for name in os.environ if name not in env]:
        del os.environ[name]
    for name, value in env.items():
        if os.environ.get(name) != value:
            os.environ[name] = value


def main():
    task_root = os.environ.get("LAMBDA_TASK_ROOT", os.getcwd())
    if task_root not in sys.path:
        sys.path.insert(0, task_root)
    client = Client()
    handler = load_handler(client)
    while True:
        status, headers, body = client.request("GET", "/invocation/next")
        if status != 200:
            sys.stderr.write("lambent bootstrap: /next answered %d\n" % status)
            sys.exit(1)
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
    if "LAMBENT_PRESTART_FD" in os.environ:
        take_assignment(int(os.environ["LAMBENT_PRESTART_FD"]))
    main()
