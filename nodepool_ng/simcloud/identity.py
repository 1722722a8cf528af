"""Identity v3: version discovery, password authentication, token validation, the catalog."""

from __future__ import annotations

import datetime
import uuid
from typing import Any

from nodepool_ng.simcloud.http import ApiError, Request, Response, Service


def catalog_urls(base: str, state: Any) -> dict[str, tuple[str, str]]:
    """service type -> (service name, endpoint URL) for the catalog of this cloud."""
    pid = state.project_id
    urls = {
        "identity": ("keystone", f"{base}/identity"),
        "compute": ("nova", f"{base}/compute/v2.1"),
        "image": ("glance", f"{base}/image"),
        "block-storage": ("cinder", f"{base}/volume/v3/{pid}"),
    }
    if state.profile.has_network_api:
        urls["network"] = ("neutron", f"{base}/network")
    if state.profile.image_upload == "task":
        urls["object-store"] = ("swift", f"{base}/object-store/v1/AUTH_{pid}")
    return urls


def _iso(when: datetime.datetime) -> str:
    """Keystone's timestamp format: UTC, microseconds, `Z`."""
    return when.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def token_body(
    methods: list[str],
    user: tuple[str, str],
    project: tuple[str, str],
    catalog: dict[str, tuple[str, str]],
    region: str,
    ttl: float,
) -> dict[str, Any]:
    """A keystone v3 token response body: `user`/`project` are (id, name) in the Default
    domain, `catalog` is service type -> (name, URL) with public and internal endpoints.

    Built by hand rather than with keystoneauth1.fixture, which needs the test-only
    `fixtures` package: simcloud must run from a plain `pip install`.
    """
    now = datetime.datetime.now(datetime.UTC)
    domain = {"id": "default", "name": "Default"}
    services = []
    for stype, (sname, url) in catalog.items():
        endpoints = [
            {"id": uuid.uuid4().hex, "interface": interface, "url": url,
             "region": region, "region_id": region}
            for interface in ("public", "internal")
        ]
        services.append({"type": stype, "id": uuid.uuid4().hex, "name": sname,
                         "endpoints": endpoints})
    return {
        "token": {
            "methods": list(methods),
            "user": {"id": user[0], "name": user[1], "domain": dict(domain)},
            "audit_ids": [uuid.uuid4().hex],
            "issued_at": _iso(now),
            "expires_at": _iso(now + datetime.timedelta(seconds=ttl)),
            "project": {"id": project[0], "name": project[1], "domain": dict(domain)},
            "roles": [{"id": uuid.uuid4().hex, "name": "member"}],
            "catalog": services,
        }
    }


class IdentityService(Service):
    name = "identity"
    prefix = "/identity"
    requires_auth = False

    def __init__(self) -> None:
        super().__init__()
        self.route("GET", "/?", self.versions)
        self.route("GET", "/v3/?", self.version)
        self.route("POST", "/v3/auth/tokens", self.issue_token)
        self.route("GET", "/v3/auth/tokens", self.validate_token)
        self.route("HEAD", "/v3/auth/tokens", self.validate_token)

    def error(self, status: int, message: str) -> ApiError:
        titles = {400: "Bad Request", 401: "Unauthorized", 403: "Forbidden", 404: "Not Found",
                  405: "Method Not Allowed", 500: "Internal Server Error"}
        return ApiError(status, {"error": {"code": status, "title": titles.get(status, "Error"),
                                           "message": message}})

    def _version_doc(self, req: Request) -> dict[str, Any]:
        return {
            "id": "v3.14", "status": "stable", "updated": "2020-04-07T00:00:00Z",
            "links": [{"rel": "self", "href": f"{req.base_url}/identity/v3/"}],
            "media-types": [{"base": "application/json",
                             "type": "application/vnd.openstack.identity-v3+json"}],
        }

    def versions(self, req: Request) -> Response:
        return Response(300, {"versions": {"values": [self._version_doc(req)]}})

    def version(self, req: Request) -> Response:
        return Response(200, {"version": self._version_doc(req)})

    def issue_token(self, req: Request) -> Response:
        auth = req.json_object("auth")
        identity = auth.get("identity")
        if not isinstance(identity, dict) or not isinstance(identity.get("methods"), list):
            raise self.error(400, "Expecting to find identity.methods in auth")
        state = req.state
        prof = state.profile
        if "password" in identity["methods"]:
            user = (identity.get("password") or {}).get("user") or {}
            name_ok = user.get("name") == prof.username or user.get("id") == state.user_id
            if not (name_ok and user.get("password") == prof.password):
                raise self.error(401, "The request you have made requires authentication.")
        elif "token" in identity["methods"]:
            if state.check_token((identity.get("token") or {}).get("id")) is None:
                raise self.error(401, "The request you have made requires authentication.")
        else:
            raise self.error(401, f"Unsupported auth methods {identity['methods']}")
        project = ((auth.get("scope") or {}).get("project")) or {}
        if (project.get("name") not in (None, prof.project)
                or project.get("id") not in (None, state.project_id)):
            raise self.error(401, "The request you have made requires authentication.")
        token_id = uuid.uuid4().hex
        body = self._token_body(req, identity["methods"])
        state.add_token(token_id, body)
        return Response(201, body, headers={"X-Subject-Token": token_id})

    def _token_body(self, req: Request, methods: list[str]) -> dict[str, Any]:
        state = req.state
        prof = state.profile
        return token_body(
            methods=methods,
            user=(state.user_id, prof.username),
            project=(state.project_id, prof.project),
            catalog=catalog_urls(req.base_url, state),
            region=prof.region,
            ttl=prof.token_ttl,
        )

    def validate_token(self, req: Request) -> Response:
        if req.state.check_token(req.headers.get("x-auth-token")) is None:
            raise self.error(401, "The request you have made requires authentication.")
        body = req.state.check_token(req.headers.get("x-subject-token"))
        if body is None:
            raise self.error(404, "Could not find token.")
        return Response(200, body, headers={"X-Subject-Token": req.headers["x-subject-token"]})
