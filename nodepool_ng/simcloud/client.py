"""A small client for the `/_admin` inspection and fault-injection endpoint of one cloud."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from typing import Any


class AdminError(RuntimeError):
    pass


class AdminClient:
    """`AdminClient("http://127.0.0.1:PORT")`: inspect one simulated cloud, change faults."""

    def __init__(self, base_url: str, timeout: float = 10.0) -> None:
        self.base_url = base_url.rstrip("/")
        self.timeout = timeout

    def _call(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(
            f"{self.base_url}/_admin/{path}", data=data, method=method,
            headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as resp:
                return json.loads(resp.read() or b"null")
        except urllib.error.HTTPError as e:
            raise AdminError(f"{method} {path}: HTTP {e.code}: {e.read().decode()}") from None
        except OSError as e:
            raise AdminError(f"{method} {path}: cannot reach {self.base_url}: {e}") from None

    def servers(self) -> list[dict[str, Any]]:
        return list(self._call("GET", "servers")["servers"])

    def ports(self) -> list[dict[str, Any]]:
        return list(self._call("GET", "ports")["ports"])

    def floating_ips(self) -> list[dict[str, Any]]:
        return list(self._call("GET", "floating_ips")["floating_ips"])

    def images(self) -> list[dict[str, Any]]:
        return list(self._call("GET", "images")["images"])

    def networks(self) -> list[dict[str, Any]]:
        return list(self._call("GET", "networks")["networks"])

    def summary(self) -> dict[str, Any]:
        return dict(self._call("GET", "summary"))

    def stats(self) -> dict[str, Any]:
        return dict(self._call("GET", "stats"))

    def forget_deleted_servers(self) -> int:
        """Drop the deleted servers' tombstones (as if they expired); returns how many."""
        return int(self._call("DELETE", "deleted_servers")["forgotten"])

    def faults(self) -> dict[str, Any]:
        return dict(self._call("GET", "faults"))

    def set_faults(self, *, error_rate: dict[str, float] | None = None,
                   server_error_rate: float | None = None, slow_rate: float | None = None,
                   slow_delay: float | None = None,
                   method_error_rate: dict[str, float] | None = None) -> dict[str, Any]:
        """Partial update; `error_rate` maps a service (compute, image, network, identity,
        object_store, volume) to the probability of a 500, `method_error_rate` an HTTP
        method (e.g. DELETE) on any service."""
        body = {k: val for k, val in (
            ("error_rate", error_rate), ("server_error_rate", server_error_rate),
            ("slow_rate", slow_rate), ("slow_delay", slow_delay),
            ("method_error_rate", method_error_rate)) if val is not None}
        return dict(self._call("PUT", "faults", body))

    def set_quota(self, *, instances: int | None = None, cores: int | None = None,
                  ram: int | None = None) -> dict[str, Any]:
        """-1 means unlimited."""
        body = {k: val for k, val in (("instances", instances), ("cores", cores),
                                      ("ram", ram)) if val is not None}
        return dict(self._call("PUT", "quota", body))

    def set_boot_delay(self, delay: float, jitter: float | None = None) -> dict[str, Any]:
        body: dict[str, Any] = {"delay": delay}
        if jitter is not None:
            body["jitter"] = jitter
        return dict(self._call("PUT", "boot", body))
