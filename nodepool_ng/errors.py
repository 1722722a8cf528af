"""One exception tree for nodepool_ng.

    NodepoolError
    ├── ConfigError                 bad configuration; message names the field path
    ├── ZooKeeperError              ZooKeeper unavailable or a record could not be read/written
    │   ├── LockError               a lock could not be taken (held elsewhere, or timed out)
    │   └── RecordNotFound          the znode is gone
    ├── CloudError                  a cloud answered badly or not at all
    │   ├── TemporaryCloudError     worth retrying (5xx, timeouts, connection errors)
    │   ├── QuotaExceeded           the cloud refused for quota: node is `aborted` and relaunched
    │   └── PermanentCloudError     retrying the same call will not help (4xx other than quota)
    ├── LaunchError                 a launch attempt failed (counted against launch-retries)
    │   ├── LaunchTimeout           server did not become ACTIVE within launch-timeout
    │   └── NodeScanError           host-key scan / reachability check failed within boot-timeout
    └── ImageBuildError             diskimage-builder failed or timed out

`temporary` tells callers whether the same operation may succeed if retried.
"""

from __future__ import annotations


class NodepoolError(Exception):
    temporary = False


class ConfigError(NodepoolError):
    """Invalid configuration. `path` is the field path, e.g. providers[1].pools[0].name."""

    def __init__(self, message: str, path: str | None = None) -> None:
        self.path = path
        super().__init__(f"{path}: {message}" if path else message)


class ZooKeeperError(NodepoolError):
    temporary = True


class LockError(ZooKeeperError):
    pass


class RecordNotFound(ZooKeeperError):
    temporary = False


class CloudError(NodepoolError):
    pass


class TemporaryCloudError(CloudError):
    temporary = True


class QuotaExceeded(CloudError):
    temporary = True


class PermanentCloudError(CloudError):
    pass


class LaunchError(NodepoolError):
    temporary = True


class LaunchTimeout(LaunchError):
    pass


class NodeScanError(LaunchError):
    pass


class ImageBuildError(NodepoolError):
    pass
