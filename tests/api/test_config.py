"""`webapp.api-tokens` in nodepool.yaml and the secure file: joined by name, each error
naming its field."""

from __future__ import annotations

from typing import Any

import pytest

from nodepool_ng.config.loader import config_from_dicts
from nodepool_ng.errors import ConfigError

SECRET = "0123456789abcdef-secret"


def _config(tokens: list[dict[str, Any]], secure: list[dict[str, Any]] | None = None) -> Any:
    raw = {"labels": [{"name": "small"}], "webapp": {"api-tokens": tokens}}
    return config_from_dicts(raw, {"webapp": {"api-tokens": secure}} if secure else {},
                             "secure.yaml")


def test_tokens_built_with_defaults() -> None:
    config = _config([{"name": "ci", "secret": SECRET},
                      {"name": "dev", "secret": SECRET + "2", "labels": ["small"],
                       "max-nodes": 3}])
    ci, dev = config.webapp.api_tokens
    assert (ci.name, ci.labels, ci.max_nodes) == ("ci", None, None)
    assert (dev.labels, dev.max_nodes) == (("small",), 3)
    assert SECRET not in repr(config)  # secrets stay out of reprs (and so of logs)


def test_no_tokens_means_api_off() -> None:
    assert config_from_dicts({"labels": [{"name": "small"}]}).webapp.api_tokens == ()


def test_secret_from_the_secure_file() -> None:
    config = _config([{"name": "ci", "labels": ["small"], "max-nodes": 2}],
                     secure=[{"name": "ci", "secret": SECRET}, {"name": "ops", "secret":
                                                                 SECRET + "ops"}])
    ci, ops = config.webapp.api_tokens
    assert (ci.secret, ci.labels, ci.max_nodes) == (SECRET, ("small",), 2)
    assert ops.secret == SECRET + "ops"


@pytest.mark.parametrize(("tokens", "secure", "message"), [
    ([{"name": "ci"}], None,
     "webapp.api-tokens[0].secret: api token 'ci' has no secret"),
    ([{"name": "ci", "secret": "short"}], None,
     "webapp.api-tokens[0].secret: must be at least 16 characters"),
    ([{"name": "ci", "secret": SECRET, "labels": ["huge"]}], None,
     "webapp.api-tokens[0].labels[0]: unknown label 'huge'"),
    ([{"name": "ci", "secret": SECRET, "max-nodes": 0}], None,
     "webapp.api-tokens[0].max-nodes: must be greater than 0"),
    ([{"name": "ci", "secret": SECRET, "max-nodes": "3"}], None,
     "webapp.api-tokens[0].max-nodes: expected int"),
    ([{"name": "ci", "secret": SECRET}, {"name": "ci", "secret": SECRET + "x"}], None,
     "webapp.api-tokens[1].name: duplicate api token 'ci'"),
    ([{"name": "a", "secret": SECRET}, {"name": "b", "secret": SECRET}], None,
     "webapp.api-tokens[1].secret: api token 'b' has the same secret as 'a'"),
    ([{"name": "two words", "secret": SECRET}], None,
     "webapp.api-tokens[0].name: expected a non-empty name without spaces"),
    ([{"name": "ci", "secret": SECRET, "colour": "red"}], None,
     "webapp.api-tokens[0].colour: unknown key"),
    ([{"name": "ci"}], [{"name": "ci", "secret": SECRET, "labels": ["huge"]}],
     "webapp.api-tokens[0].labels[0]: unknown label 'huge' (in secure file secure.yaml)"),
])
def test_errors_name_the_field(tokens: list[dict[str, Any]],
                               secure: list[dict[str, Any]] | None, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        _config(tokens, secure)
    assert str(info.value).startswith(message), str(info.value)


def test_secure_file_takes_only_tokens_under_webapp() -> None:
    with pytest.raises(ConfigError, match=r"webapp.port: unknown key \(in secure file"):
        config_from_dicts({"labels": [{"name": "small"}]}, {"webapp": {"port": 1}},
                          "secure.yaml")
