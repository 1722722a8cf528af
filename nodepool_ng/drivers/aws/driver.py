"""The registry entry of `driver: aws` (EC2 through boto3, imported only for an adapter)."""

from __future__ import annotations

from typing import Any

from nodepool_ng.config import checks
from nodepool_ng.drivers.aws.config import PROVIDER_SCHEMA, build_provider, check_references
from nodepool_ng.drivers.base import ImageAdapter, ProviderAdapter
from nodepool_ng.drivers.registry import AdapterOptions, Driver, Errors, Raw


def check_provider(index: int, provider: Raw, raw: Raw) -> Errors:
    """The names every driver checks, plus this provider's own image references."""
    errors = checks.check_references(index, provider, raw)
    errors += [(f"providers[{index}].{path}", message)
               for path, message in check_references(provider)]
    return errors


def make_adapter(provider: Any, options: AdapterOptions) -> ProviderAdapter:
    from nodepool_ng.drivers.aws.adapter import AwsAdapter  # boto3: lazy

    return AwsAdapter(provider, **options.kwargs("endpoint_url", "poll_interval"))


def make_image_adapter(provider: Any, options: AdapterOptions) -> ImageAdapter:
    from nodepool_ng.drivers.aws.adapter import AwsAdapter

    return AwsAdapter(provider, **options.kwargs("endpoint_url"))


DRIVER = Driver(
    name="aws",
    schema=PROVIDER_SCHEMA,
    build_provider=build_provider,
    check_provider=check_provider,
    make_adapter=make_adapter,
    make_image_adapter=make_image_adapter,
    upload_diskimage_arg=True,
)
