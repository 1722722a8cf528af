"""openstacksdk plumbing shared by the OpenStack driver's parts: the cloud config, two
per-call costs taken out of the connection, and error mapping."""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any, TypeVar

import openstack.config
from openstack import exceptions as os_exc

from nodepool_ng.errors import ConfigError, PermanentCloudError, TemporaryCloudError

R = TypeVar("R")


def load_cloud_region(cloud: str, region_name: str | None = None,
                      clouds_yaml: str | None = None) -> Any:
    """openstacksdk's CloudRegion for `cloud`; an explicit clouds.yaml replaces the search."""
    try:
        if clouds_yaml:
            config = openstack.config.OpenStackConfig(
                config_files=[clouds_yaml], secure_files=[], load_envvars=False)
        else:
            config = openstack.config.OpenStackConfig()
        return config.get_one(cloud=cloud, region_name=region_name)
    except os_exc.SDKException as e:  # ConfigException and friends
        raise ConfigError(f"cloud {cloud!r}: {e}", path="cloud") from e


def skip_per_call_env_lookups(ksa_session: Any) -> bool:
    """Stop requests from re-reading the environment on every API call when it cannot matter.

    With `trust_env`, requests looks up proxy variables, the CA-bundle variables and
    ~/.netrc on every call (~10% of the launcher's CPU). When no proxy variable and no netrc
    file exist, the only effect left is the CA bundle: pin it on the session once (exactly
    what requests would pick per call) and switch the per-call lookups off. True if done.
    """
    env = os.environ
    if any(key.lower().endswith("_proxy") for key in env):
        return False
    netrc_files = [env["NETRC"]] if env.get("NETRC") else ["~/.netrc", "~/_netrc"]
    if any(os.path.exists(os.path.expanduser(f)) for f in netrc_files):
        return False
    requests_session = getattr(ksa_session, "session", None)
    if requests_session is None or not hasattr(requests_session, "trust_env"):
        return False
    bundle = env.get("REQUESTS_CA_BUNDLE") or env.get("CURL_CA_BUNDLE")
    if bundle and getattr(ksa_session, "verify", None) is True:
        ksa_session.verify = bundle
    requests_session.trust_env = False
    return True


def remember_service_lookups(conn: Any) -> None:
    """Answer `conn.has_service(...)` from memory once it said yes.

    openstacksdk's `add_server_interfaces` asks `has_service("network")` for every server
    it expands, and each answer re-derives the cloud config (a deep copy) and searches the
    service catalog: ~7% of the launcher's CPU in a burst. The catalog a connection was
    given does not change while it lives (a config reload builds a new connection). Only
    "yes" is remembered: openstacksdk also answers "no" when the lookup itself failed.
    """
    ask = conn.has_service
    present: set[tuple[str, str | None]] = set()

    def has_service(service_key: str, version: str | None = None) -> bool:
        key = (service_key, version)
        if key in present:
            return True
        if ask(service_key, version):
            present.add(key)
            return True
        return False

    conn.has_service = has_service


def cloud_error(e: os_exc.HttpException, what: str) -> Exception:
    status = e.status_code or 0
    if status >= 500 or status in (408, 429):
        return TemporaryCloudError(f"{what}: {status} {e.details or e}")
    return PermanentCloudError(f"{what}: {status} {e.details or e}")


def call(fn: Callable[..., R], *args: Any, **kwargs: Any) -> R:
    """A synchronous API call with errors mapped onto our exception tree."""
    try:
        return fn(*args, **kwargs)
    except os_exc.HttpException as e:
        raise cloud_error(e, getattr(fn, "__name__", "API call")) from e
    except os_exc.SDKException as e:
        raise TemporaryCloudError(f"{getattr(fn, '__name__', 'API call')}: {e}") from e
