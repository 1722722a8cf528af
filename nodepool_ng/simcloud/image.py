"""Image v2 (glance): images, data upload by PUT, tags; the task-import flow is in
`image_tasks.py`.

A cloud accepts only its profile's `image_formats`: creating an image in another disk format
is a 400. Task import (`POST /v2/tasks`, type `import`) reads the object from the cloud's
object store, detects its format from the data and fails the task if the cloud does not take
it, as Rackspace's conversion service did.
"""

from __future__ import annotations

import hashlib
import html
import time
from typing import Any

from nodepool_ng.simcloud.http import ApiError, Request, Response, Service
from nodepool_ng.simcloud.state import CloudState, Image, iso, new_id

CONTAINER_FORMATS = ("bare", "ovf", "ova", "aki", "ari", "ami", "docker", "compressed")
IMPORT_METHODS = "glance-direct,web-download"
_READ_ONLY = {"status", "size", "virtual_size", "checksum", "os_hash_algo", "os_hash_value",
              "created_at", "updated_at", "owner", "file", "self", "schema", "direct_url",
              "locations"}
_CORE = {"id", "name", "visibility", "protected", "tags", "disk_format", "container_format",
         "min_disk", "min_ram", "os_hidden"}
_REASONS = {400: "Bad Request", 401: "Unauthorized", 403: "Forbidden", 404: "Not Found",
            405: "Method Not Allowed", 409: "Conflict", 413: "Request Entity Too Large",
            415: "Unsupported Media Type", 500: "Internal Server Error"}


def detect_format(data: bytes) -> str:
    """Disk format from the data's magic numbers; `raw` when nothing matches."""
    if data[:4] == b"QFI\xfb":
        return "qcow2"
    if data[:8] == b"conectix" or (len(data) >= 512 and data[-512:-504] == b"conectix"):
        return "vhd"
    if data[:4] == b"KDMV":
        return "vmdk"
    if data[64:68] == b"\x7f\x10\xda\xbe":
        return "vdi"
    if data[0x8001:0x8006] == b"CD001":
        return "iso"
    return "raw"


def store_image_data(state: CloudState, img: Image, data: bytes) -> None:
    """`img`'s data (its size and checksums with it): the image is active."""
    state.image_data[img.id] = data
    img.size = len(data)
    img.checksum = hashlib.md5(data, usedforsecurity=False).hexdigest()
    img.hash_value = hashlib.sha512(data).hexdigest()
    img.status = "active"
    img.updated = time.time()


class ImageService(Service):
    name = "image"
    prefix = "/image"

    def __init__(self) -> None:
        super().__init__()
        self.route("GET", "/?", self.versions)
        self.route("GET", "/v2/images", self.list_images)
        self.route("POST", "/v2/images", self.create_image)
        self.route("GET", "/v2/images/([^/]+)", self.show_image)
        self.route("PATCH", "/v2/images/([^/]+)", self.update_image)
        self.route("DELETE", "/v2/images/([^/]+)", self.delete_image)
        self.route("PUT", "/v2/images/([^/]+)/file", self.upload)
        self.route("GET", "/v2/images/([^/]+)/file", self.download)
        self.route("PUT", "/v2/images/([^/]+)/tags/([^/]+)", self.add_tag)
        self.route("DELETE", "/v2/images/([^/]+)/tags/([^/]+)", self.delete_tag)

    def error(self, status: int, message: str) -> ApiError:
        reason = f"{status} {_REASONS.get(status, 'Error')}"
        body = (f"<html>\n <head>\n  <title>{reason}</title>\n </head>\n <body>\n"
                f"  <h1>{reason}</h1>\n  {html.escape(message)}<br /><br />\n\n </body>\n</html>")
        return ApiError(status, body, "text/html; charset=UTF-8")

    def versions(self, req: Request) -> Response:
        href = f"{req.base_url}/image/v2/"
        values = [{"id": f"v2.{n}", "status": "CURRENT" if n == 16 else "SUPPORTED",
                   "links": [{"rel": "self", "href": href}]} for n in (16, 9, 1, 0)]
        return Response(300, {"versions": values})

    # --- views and helpers ----------------------------------------------------------------

    def view(self, img: Image, state: CloudState) -> dict[str, Any]:
        out: dict[str, Any] = dict(img.properties)
        out.update({
            "id": img.id, "name": img.name, "status": img.status,
            "visibility": img.visibility, "protected": img.protected, "os_hidden": False,
            "tags": list(img.tags), "disk_format": img.disk_format,
            "container_format": img.container_format, "min_disk": img.min_disk,
            "min_ram": img.min_ram, "size": img.size, "virtual_size": None,
            "checksum": img.checksum,
            "os_hash_algo": "sha512" if img.hash_value else None,
            "os_hash_value": img.hash_value, "owner": state.project_id,
            "created_at": iso(img.created), "updated_at": iso(img.updated or img.created),
            "self": f"/v2/images/{img.id}", "file": f"/v2/images/{img.id}/file",
            "schema": "/v2/schemas/image",
        })
        return out

    def _image(self, state: CloudState, image_id: str) -> Image:
        img = state.images.get(image_id)
        if img is None:
            raise self.error(404, f"No image found with ID {image_id}")
        return img

    def _set_field(self, state: CloudState, img: Image, key: str, value: Any,
                   creating: bool) -> None:
        if key in _READ_ONLY:
            raise self.error(403, f"Attribute '{key}' is read-only.")
        if key == "id" and not creating:
            raise self.error(403, "Attribute 'id' is read-only.")
        if key == "disk_format":
            if value not in state.profile.image_formats:
                raise self.error(400, f"Invalid value '{value}' for 'disk_format': this cloud "
                                      f"accepts {', '.join(state.profile.image_formats)}")
            img.disk_format = value
        elif key == "container_format":
            if value not in CONTAINER_FORMATS:
                raise self.error(400, f"Invalid value '{value}' for 'container_format'")
            img.container_format = value
        elif key == "name":
            if value is not None and not isinstance(value, str):
                raise self.error(400, "Invalid value for 'name': must be a string")
            img.name = value or ""
        elif key == "visibility":
            if value not in ("public", "private", "shared", "community"):
                raise self.error(400, f"Invalid visibility value: {value}")
            img.visibility = value
        elif key in ("min_disk", "min_ram"):
            if not isinstance(value, int) or value < 0:
                raise self.error(400, f"Invalid value for '{key}': must be an integer >= 0")
            setattr(img, key, value)
        elif key == "protected":
            if not isinstance(value, bool):
                raise self.error(400, "Invalid value for 'protected': must be a boolean")
            img.protected = value
        elif key == "tags":
            if not isinstance(value, list) or not all(isinstance(t, str) for t in value):
                raise self.error(400, "Invalid value for 'tags': must be a list of strings")
            img.tags = list(dict.fromkeys(value))
        elif key in ("id", "os_hidden"):
            pass
        else:
            if not isinstance(value, str):
                raise self.error(400, f"Invalid value for '{key}': additional properties "
                                      "must be strings")
            img.properties[key] = value

    # --- images ---------------------------------------------------------------------------

    def list_images(self, req: Request) -> Response:
        try:
            limit = min(int(req.arg("limit") or 25), 1000)
        except ValueError:
            raise self.error(400, "limit param must be an integer") from None
        marker = req.arg("marker")
        filters = {k: req.arg(k) for k in ("name", "status", "visibility", "disk_format", "id")
                   if req.arg(k) is not None}
        tags = req.query.get("tag", [])
        state = req.state
        with state.lock:
            images = sorted(state.images.values(), key=lambda i: (i.created, i.id),
                            reverse=True)
            if marker:
                ids = [i.id for i in images]
                if marker not in ids:
                    raise self.error(400, f"marker [{marker}] not found")
                images = images[ids.index(marker) + 1:]
            picked = []
            for img in images:
                view = self.view(img, state)
                if any(str(view.get(k)) != v for k, v in filters.items()):
                    continue
                if any(t not in img.tags for t in tags):
                    continue
                picked.append(view)
                if len(picked) == limit:
                    break
        body: dict[str, Any] = {"images": picked, "schema": "/v2/schemas/images",
                                "first": "/v2/images"}
        if len(picked) == limit:
            body["next"] = f"/v2/images?limit={limit}&marker={picked[-1]['id']}"
        return Response(200, body)

    def create_image(self, req: Request) -> Response:
        data = req.json()
        if not isinstance(data, dict):
            raise self.error(400, "Malformed request body: expected a JSON object")
        state = req.state
        now = time.time()
        img = Image(id=str(data.get("id") or new_id()), name="", created=now, updated=now)
        for key, value in data.items():
            self._set_field(state, img, key, value, creating=True)
        with state.lock:
            if img.id in state.images:
                raise self.error(409, f"Image with identifier {img.id} already exists!")
            state.images[img.id] = img
            view = self.view(img, state)
        return Response(201, view, headers={
            "OpenStack-image-import-methods": IMPORT_METHODS,
            "Location": f"{req.base_url}/image/v2/images/{img.id}"})

    def show_image(self, req: Request) -> Response:
        with req.state.lock:
            return Response(200, self.view(self._image(req.state, req.params[0]), req.state))

    def update_image(self, req: Request) -> Response:
        ops = req.json()
        if not isinstance(ops, list):
            raise self.error(400, "Malformed JSON patch: expected a list of operations")
        state = req.state
        with state.lock:
            img = self._image(state, req.params[0])
            for op in ops:
                if not isinstance(op, dict) or op.get("op") not in ("add", "replace", "remove"):
                    raise self.error(400, f"Invalid JSON patch operation: {op}")
                path = str(op.get("path", ""))
                if not path.startswith("/") or len(path) < 2:
                    raise self.error(400, f"Invalid JSON patch path: {path}")
                key = path[1:]
                if op["op"] == "remove":
                    if key in _CORE or key in _READ_ONLY:
                        raise self.error(403, f"Attribute '{key}' can not be removed.")
                    if img.properties.pop(key, None) is None:
                        raise self.error(409, f"Property {key} does not exist.")
                    continue
                if "value" not in op:
                    raise self.error(400, f"Operation {op['op']} on {path} needs a value")
                if key in ("disk_format", "container_format") and img.status != "queued" and \
                        op["value"] != getattr(img, key):
                    raise self.error(403, f"Attribute {key} can be only replaced for a queued "
                                          "image.")
                self._set_field(state, img, key, op["value"], creating=False)
            img.updated = time.time()
            return Response(200, self.view(img, state))

    def delete_image(self, req: Request) -> Response:
        with req.state.lock:
            img = self._image(req.state, req.params[0])
            if img.protected:
                raise self.error(403, f"Image {img.id} is protected and cannot be deleted.")
            del req.state.images[img.id]
            req.state.image_data.pop(img.id, None)
        return Response(204, None)

    def upload(self, req: Request) -> Response:
        state = req.state
        with state.lock:
            img = self._image(state, req.params[0])
            if img.status != "queued":
                raise self.error(409, f"Image status transition from {img.status} to saving "
                                      "is not allowed")
            if not img.disk_format or not img.container_format:
                raise self.error(400, "Properties disk_format, container_format must be set "
                                      "prior to saving data.")
            found = detect_format(req.body)
            if found != "raw" and found != img.disk_format:
                raise self.error(400, f"Image content is {found}, not the declared "
                                      f"disk_format {img.disk_format}")
            store_image_data(state, img, req.body)
        return Response(204, None)

    def download(self, req: Request) -> Response:
        with req.state.lock:
            img = self._image(req.state, req.params[0])
            data = req.state.image_data.get(img.id)
        if data is None:
            return Response(204, None)
        return Response(200, data, content_type="application/octet-stream",
                        headers={"Content-MD5": img.checksum or ""})

    def add_tag(self, req: Request) -> Response:
        with req.state.lock:
            img = self._image(req.state, req.params[0])
            if req.params[1] not in img.tags:
                img.tags.append(req.params[1])
        return Response(204, None)

    def delete_tag(self, req: Request) -> Response:
        with req.state.lock:
            img = self._image(req.state, req.params[0])
            if req.params[1] not in img.tags:
                raise self.error(404, f"Tag {req.params[1]} not found")
            img.tags.remove(req.params[1])
        return Response(204, None)
