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
    """The root. A subclass declares `temporary=` when it differs from its parent's."""

    temporary = False

    def __init_subclass__(cls, temporary: bool | None = None, **kwargs: object) -> None:
        super().__init_subclass__(**kwargs)
        if temporary is not None:
            cls.temporary = temporary


class ConfigError(NodepoolError):
    """Invalid configuration. `path` is the field path, e.g. providers[1].pools[0].name."""

    def __init__(self, message: str, path: str | None = None) -> None:
        self.path = path
        super().__init__(f"{path}: {message}" if path else message)


class ZooKeeperError(NodepoolError, temporary=True):
    """ZooKeeper could not be reached in time (suspended or lost session, a timeout), or a
    record could not be read or written; the next pass usually succeeds."""


class LockError(ZooKeeperError):
    """A lock was held elsewhere or not granted before the timeout."""


class RecordNotFound(ZooKeeperError, temporary=False):
    """The znode is gone (deleted meanwhile, or never there): reading it again won't help."""


class CloudError(NodepoolError):
    """A cloud API call failed; the subclass says whether it is worth retrying."""


class TemporaryCloudError(CloudError, temporary=True):
    """5xx, timeouts, refused or reset connections: the same call may succeed later."""


class QuotaExceeded(CloudError, temporary=True):
    """The cloud refused for quota. The node is marked `aborted` and its request launched
    again once quota frees up (not counted against launch-retries)."""


class PermanentCloudError(CloudError):
    """4xx other than quota: the same call would be refused again."""


class LaunchError(NodepoolError, temporary=True):
    """One launch attempt failed; counted against the provider's launch-retries."""


class LaunchTimeout(LaunchError):
    """The server did not become ACTIVE within launch-timeout."""


class NodeScanError(LaunchError):
    """The host-key scan or reachability check did not succeed within boot-timeout."""


class ImageBuildError(NodepoolError):
    """diskimage-builder failed or ran past build-timeout."""
