"""simcloud's keystone token body, read back by keystoneauth1 as openstacksdk reads it."""

from __future__ import annotations

import datetime

from keystoneauth1 import access

from nodepool_ng.simcloud.identity import token_body


def test_token_body_is_a_valid_keystone_v3_token() -> None:
    body = token_body(
        methods=["password"],
        user=("uid", "alice"),
        project=("pid", "demo"),
        catalog={"compute": ("nova", "http://127.0.0.1:1/compute/v2.1"),
                 "image": ("glance", "http://127.0.0.1:1/image")},
        region="RegionOne",
        ttl=3600,
    )
    info = access.create(body=body, auth_token="tok")
    assert isinstance(info, access.AccessInfoV3)
    assert (info.user_id, info.username, info.user_domain_id) == ("uid", "alice", "default")
    assert (info.project_id, info.project_name, info.project_domain_name) == (
        "pid", "demo", "Default")
    assert info.role_names == ["member"]
    assert body["token"]["methods"] == ["password"]
    remaining = info.expires - datetime.datetime.now(datetime.UTC)
    assert datetime.timedelta(minutes=59) < remaining <= datetime.timedelta(hours=1)
    catalog = info.service_catalog
    for interface in ("public", "internal"):
        assert catalog.url_for(service_type="compute", interface=interface,
                               region_name="RegionOne") == "http://127.0.0.1:1/compute/v2.1"
    assert catalog.url_for(service_type="image", service_name="glance") == (
        "http://127.0.0.1:1/image")
