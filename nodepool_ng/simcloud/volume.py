"""Block storage v3 stub: discovery and `/limits` (upstream Nodepool 11 asks for volume quota)."""

from __future__ import annotations

from nodepool_ng.simcloud.http import ApiError, Request, Response, Service


class VolumeService(Service):
    name = "volume"
    prefix = "/volume"

    def __init__(self) -> None:
        super().__init__()
        self.route("GET", "/?", self.versions)
        self.route("GET", "/v3/?", self.version)
        self.route("GET", "/v3/[^/]+/limits", self.limits)
        self.route("GET", "/v3/[^/]+/volumes(/detail)?", self.volumes)

    def error(self, status: int, message: str) -> ApiError:
        kinds = {400: "badRequest", 404: "itemNotFound", 500: "computeFault"}
        return ApiError(status, {kinds.get(status, "computeFault"): {
            "message": message, "code": status}})

    def _doc(self, req: Request) -> dict[str, object]:
        return {"id": "v3.0", "status": "CURRENT", "version": "3.0", "min_version": "3.0",
                "updated": "2016-02-08T12:20:21Z",
                "links": [{"rel": "self", "href": f"{req.base_url}/volume/v3/"}],
                "media-types": [{"base": "application/json",
                                 "type": "application/vnd.openstack.volume+json;version=3"}]}

    def versions(self, req: Request) -> Response:
        return Response(300, {"versions": [self._doc(req)]})

    def version(self, req: Request) -> Response:
        return Response(200, {"version": self._doc(req)})

    def limits(self, req: Request) -> Response:
        absolute = {"maxTotalVolumes": -1, "maxTotalVolumeGigabytes": -1,
                    "maxTotalSnapshots": -1, "maxTotalBackups": -1,
                    "maxTotalBackupGigabytes": -1, "totalVolumesUsed": 0,
                    "totalGigabytesUsed": 0, "totalSnapshotsUsed": 0, "totalBackupsUsed": 0,
                    "totalBackupGigabytesUsed": 0}
        return Response(200, {"limits": {"rate": [], "absolute": absolute}})

    def volumes(self, req: Request) -> Response:
        return Response(200, {"volumes": []})
