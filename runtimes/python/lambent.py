"""Lambent's services for Python functions (stdlib only).

    import lambent
    lambent.kv.put("profiles", "alice", {"plan": "pro"})      # -> revision
    entry = lambent.kv.entry("profiles", "alice")             # {"value", "revision", ...} or None
    lambent.kv.get("profiles", "alice")                       # the value, or None
    lambent.kv.cas("profiles", "alice", new, entry["revision"])   # raises lambent.Conflict if stale
    lambent.kv.delete("profiles", "alice")
    lambent.kv.list("profiles", prefix="a")                   # entries, in key order
    lambent.events.publish("order_placed", {"id": 7})         # -> the event's id

A function may use only what its grants name: `--grant kv:NAMESPACE`,
`--grant publish:TYPE` (deny by default); otherwise calls raise lambent.Forbidden.
"""

import http.client
import json
import os
import urllib.parse

__all__ = ["kv", "events", "Error", "Forbidden", "Conflict"]


class Error(Exception):
    """The node refused or failed a request; `status` and `code` say how."""

    def __init__(self, status, code, message):
        super().__init__(message)
        self.status = status
        self.code = code


class Forbidden(Error):
    """The function has no grant for this."""


class Conflict(Error):
    """A compare-and-swap found another revision."""


def _request(method, path, body=None, query=None):
    address = os.environ["AWS_LAMBDA_RUNTIME_API"]
    host, _, port = address.rpartition(":")
    url = "/lambent/v1" + path
    if query:
        url += "?" + urllib.parse.urlencode({k: v for k, v in query.items() if v is not None})
    headers = {"Authorization": "Bearer " + os.environ.get("LAMBENT_API_TOKEN", "")}
    data = None
    if body is not None:
        data = json.dumps(body).encode()
        headers["Content-Type"] = "application/json"
    conn = http.client.HTTPConnection(host, int(port), timeout=30)
    try:
        conn.request(method, url, body=data, headers=headers)
        resp = conn.getresponse()
        raw = resp.read()
    finally:
        conn.close()
    answer = json.loads(raw) if raw else None
    if resp.status >= 400:
        err = (answer or {}).get("error", {}) if isinstance(answer, dict) else {}
        kind = {403: Forbidden, 409: Conflict}.get(resp.status, Error)
        raise kind(resp.status, err.get("code", ""), err.get("message", raw.decode(errors="replace")))
    return resp.status, answer


def _key(namespace, key):
    return "/kv/%s/%s" % (urllib.parse.quote(namespace, safe=""), urllib.parse.quote(key, safe="/"))


class _Kv:
    def entry(self, namespace, key):
        """The key's entry (value, revision, updated_ms), or None."""
        try:
            return _request("GET", _key(namespace, key))[1]
        except Error as e:
            if e.status == 404:
                return None
            raise

    def get(self, namespace, key, default=None):
        entry = self.entry(namespace, key)
        return default if entry is None else entry["value"]

    def put(self, namespace, key, value, ttl=None):
        """Writes the key (a data-change event is published with it); its revision."""
        return _request("PUT", _key(namespace, key), value, {"ttl": ttl})[1]["revision"]

    def cas(self, namespace, key, value, revision, ttl=None):
        """Writes only if the key is at `revision` (0: only if absent); raises Conflict."""
        return _request("PUT", _key(namespace, key), value, {"ttl": ttl, "if_revision": revision})[1]["revision"]

    def delete(self, namespace, key, revision=None):
        """Deletes the key; its revision, or None when there was no such key."""
        try:
            return _request("DELETE", _key(namespace, key), query={"if_revision": revision})[1]["revision"]
        except Error as e:
            if e.status == 404:
                return None
            raise

    def list(self, namespace, prefix=""):
        return _request("GET", "/kv/%s" % urllib.parse.quote(namespace, safe=""), query={"prefix": prefix})[1]["keys"]


class _Events:
    def publish(self, type, data=None, subject=None, id=None, source=None):
        """Publishes a CloudEvent (stored durably before this returns); its id."""
        event = {"type": type}
        for name, value in (("data", data), ("subject", subject), ("id", id), ("source", source)):
            if value is not None:
                event[name] = value
        return _request("POST", "/events", event)[1]["id"]


kv = _Kv()
events = _Events()
