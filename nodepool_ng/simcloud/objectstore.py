"""Object storage (swift), just what glance task import needs: containers and objects."""

from __future__ import annotations

import hashlib
import time

from nodepool_ng.simcloud.http import ApiError, Request, Response, Service

_ACCOUNT = "/v1/AUTH_[^/]+"
_TEXT = {401: "Unauthorized", 404: "Not Found", 409: "Conflict", 400: "Bad Request",
         405: "Method Not Allowed", 500: "Internal Error"}


class ObjectStoreService(Service):
    name = "object_store"
    prefix = "/object-store"

    def __init__(self) -> None:
        super().__init__()
        self.route("GET", "/info", self.info)
        self.route("GET", f"{_ACCOUNT}/?", self.list_containers)
        self.route("HEAD", f"{_ACCOUNT}/?", self.head_account)
        self.route("PUT", f"{_ACCOUNT}/([^/]+)/?", self.put_container)
        self.route("POST", f"{_ACCOUNT}/([^/]+)/?", self.post_container)
        self.route("HEAD", f"{_ACCOUNT}/([^/]+)/?", self.head_container)
        self.route("GET", f"{_ACCOUNT}/([^/]+)/?", self.list_objects)
        self.route("DELETE", f"{_ACCOUNT}/([^/]+)/?", self.delete_container)
        self.route("PUT", f"{_ACCOUNT}/([^/]+)/(.+)", self.put_object)
        self.route("HEAD", f"{_ACCOUNT}/([^/]+)/(.+)", self.head_object)
        self.route("GET", f"{_ACCOUNT}/([^/]+)/(.+)", self.get_object)
        self.route("DELETE", f"{_ACCOUNT}/([^/]+)/(.+)", self.delete_object)

    def error(self, status: int, message: str) -> ApiError:
        title = _TEXT.get(status, "Error")
        return ApiError(status, f"<html><h1>{title}</h1><p>{message}</p></html>",
                        "text/html; charset=UTF-8")

    def info(self, req: Request) -> Response:
        return Response(200, {"swift": {"version": "2.30.0", "max_file_size": 5368709122,
                                        "max_object_name_length": 1024},
                              "slo": {"max_manifest_segments": 1000,
                                      "min_segment_size": 1}})

    def head_account(self, req: Request) -> Response:
        with req.state.lock:
            n = len(req.state.objects)
        return Response(204, None, headers={"X-Account-Container-Count": str(n)})

    def list_containers(self, req: Request) -> Response:
        with req.state.lock:
            names = sorted(req.state.objects)
            body = [{"name": n, "count": len(req.state.objects[n]),
                     "bytes": sum(len(d) for d, _ in req.state.objects[n].values())}
                    for n in names]
        return Response(200, body)

    def put_container(self, req: Request) -> Response:
        with req.state.lock:
            created = req.params[0] not in req.state.objects
            req.state.objects.setdefault(req.params[0], {})
        return Response(201 if created else 202, None)

    def post_container(self, req: Request) -> Response:
        self._container(req)
        return Response(204, None)

    def _container(self, req: Request) -> dict[str, tuple[bytes, dict[str, str]]]:
        container = req.state.objects.get(req.params[0])
        if container is None:
            raise self.error(404, "The resource could not be found.")
        return container

    def head_container(self, req: Request) -> Response:
        with req.state.lock:
            container = self._container(req)
            return Response(204, None, headers={"X-Container-Object-Count": str(len(container))})

    def list_objects(self, req: Request) -> Response:
        with req.state.lock:
            container = self._container(req)
            body = [{"name": n, "bytes": len(d), "hash": hashlib.md5(
                d, usedforsecurity=False).hexdigest(), "content_type": "application/octet-stream",
                "last_modified": time.strftime("%Y-%m-%dT%H:%M:%S")}
                for n, (d, _) in sorted(container.items())]
        return Response(200, body)

    def delete_container(self, req: Request) -> Response:
        with req.state.lock:
            if self._container(req):
                raise self.error(409, "There was a conflict when trying to complete your "
                                      "request.")
            del req.state.objects[req.params[0]]
        return Response(204, None)

    def put_object(self, req: Request) -> Response:
        meta = {k: v for k, v in req.headers.items() if k.startswith("x-object-meta-")}
        etag = hashlib.md5(req.body, usedforsecurity=False).hexdigest()
        if req.headers.get("etag") not in (None, etag):
            raise ApiError(422, "<html><h1>Unprocessable Entity</h1></html>", "text/html")
        with req.state.lock:
            self._container(req)[req.params[1]] = (req.body, meta)
        return Response(201, None, headers={"Etag": etag})

    def _object(self, req: Request) -> tuple[bytes, dict[str, str]]:
        obj = self._container(req).get(req.params[1])
        if obj is None:
            raise self.error(404, "The resource could not be found.")
        return obj

    def head_object(self, req: Request) -> Response:
        with req.state.lock:
            data, meta = self._object(req)
        headers = {"Etag": hashlib.md5(data, usedforsecurity=False).hexdigest(),
                   "X-Object-Size": str(len(data))}
        headers.update(meta)
        return Response(200, b"", content_type="application/octet-stream", headers=headers)

    def get_object(self, req: Request) -> Response:
        with req.state.lock:
            data, meta = self._object(req)
        return Response(200, data, content_type="application/octet-stream", headers=meta)

    def delete_object(self, req: Request) -> Response:
        with req.state.lock:
            self._object(req)
            del self._container(req)[req.params[1]]
        return Response(204, None)
