"""Settings: defaults of docs/protocol.md section 8; env < TOML file < command line precedence."""

from __future__ import annotations

import os
from pathlib import Path

import pydantic
import pytest

from manager_gateway.config import DEFAULT_GROUPS, GroupConfig, Settings, load_settings

EXAMPLE = Path(__file__).resolve().parents[2] / "config" / "gateway.example.toml"


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """No GATEWAY_* variable from the outer environment leaks into these tests."""
    for name in list(os.environ):
        if name.upper().startswith("GATEWAY_"):
            monkeypatch.delenv(name)


def write_toml(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "gateway.toml"
    path.write_text(text)
    return path


def test_protocol_defaults() -> None:
    """With nothing configured the limits are those of docs/protocol.md sections 1, 6, 7 and 8."""
    settings = load_settings()
    assert settings.max_frame_bytes == 1024 * 1024
    assert settings.max_inflight == 1024
    assert settings.max_outbound_bytes == 8 * 1024 * 1024
    assert settings.max_auth_failures == 10
    assert settings.auth_timeout_s == 10
    assert settings.frame_timeout_s == 30
    assert settings.sync_timeout_ms == 5000
    assert settings.idempotency_ttl_s == 86400
    assert settings.host == "127.0.0.1"
    assert settings.port == 8080


def test_default_groups() -> None:
    """The embedded default group is `demo`, USD, 2 digits (docs/protocol.md section 5)."""
    settings = load_settings()
    assert settings.groups == DEFAULT_GROUPS
    assert [g.to_wire() for g in settings.groups] == [
        {"group": "demo", "currency": "USD", "digits": 2, "default_leverage": 100}
    ]
    assert list(settings.groups_by_name()) == ["demo"]


def test_settings_are_frozen() -> None:
    """Settings cannot be changed after loading."""
    settings = load_settings()
    with pytest.raises(pydantic.ValidationError):
        settings.port = 1  # type: ignore[misc]


def test_env_overrides_default(monkeypatch: pytest.MonkeyPatch) -> None:
    """GATEWAY_SYNC_TIMEOUT_MS=2000 sets sync_timeout_ms; other settings keep their defaults."""
    monkeypatch.setenv("GATEWAY_SYNC_TIMEOUT_MS", "2000")
    settings = load_settings()
    assert settings.sync_timeout_ms == 2000
    assert settings.max_inflight == 1024


def test_env_invalid_value_is_error(monkeypatch: pytest.MonkeyPatch) -> None:
    """An env value that does not validate is an error, not silently ignored."""
    monkeypatch.setenv("GATEWAY_SYNC_TIMEOUT_MS", "soon")
    with pytest.raises(pydantic.ValidationError):
        load_settings()


def test_file_overrides_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """A value in the TOML file wins over the same setting in the environment."""
    monkeypatch.setenv("GATEWAY_SYNC_TIMEOUT_MS", "2000")
    monkeypatch.setenv("GATEWAY_MAX_INFLIGHT", "77")
    path = write_toml(tmp_path, "sync_timeout_ms = 3000\nport = 9000\n")
    settings = load_settings(path)
    assert settings.sync_timeout_ms == 3000
    assert settings.port == 9000
    assert settings.max_inflight == 77  # not in the file: the environment still applies


def test_overrides_win_over_file(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Keyword overrides (the CLI flags) win over the file and the environment."""
    monkeypatch.setenv("GATEWAY_PORT", "7000")
    path = write_toml(tmp_path, 'port = 9000\nhost = "0.0.0.0"\ndata_dir = "/srv/file"\n')
    settings = load_settings(path, port=9100, host="10.0.0.1", data_dir=tmp_path / "cli")
    assert settings.port == 9100
    assert settings.host == "10.0.0.1"
    assert settings.data_dir == tmp_path / "cli"


def test_overrides_win_over_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """Keyword overrides win over the environment when no file is given."""
    monkeypatch.setenv("GATEWAY_PORT", "7000")
    assert load_settings(None, port=9100).port == 9100


def test_none_overrides_ignored(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """An override of None (a CLI flag not given) leaves the lower layers' value."""
    assert load_settings(None, port=None, host=None, data_dir=None).port == 8080
    monkeypatch.setenv("GATEWAY_HOST", "192.0.2.1")
    path = write_toml(tmp_path, "port = 9000\n")
    settings = load_settings(path, port=None, host=None, data_dir=None)
    assert settings.port == 9000
    assert settings.host == "192.0.2.1"
    assert settings.data_dir == Path("var")


def test_unknown_key_in_file_is_error(tmp_path: Path) -> None:
    """A misspelt setting in the TOML file is refused, not ignored."""
    path = write_toml(tmp_path, "sync_timeout = 3000\n")
    with pytest.raises(pydantic.ValidationError, match="sync_timeout"):
        load_settings(path)


def test_invalid_value_in_file_is_error(tmp_path: Path) -> None:
    """A value out of range in the TOML file is refused."""
    path = write_toml(tmp_path, "max_frame_bytes = 10\n")
    with pytest.raises(pydantic.ValidationError, match="max_frame_bytes"):
        load_settings(path)


def test_unknown_override_is_error() -> None:
    """An unknown keyword override is refused."""
    with pytest.raises(pydantic.ValidationError):
        load_settings(None, no_such_setting=1)


def test_missing_config_file(tmp_path: Path) -> None:
    """A config file path that does not exist raises FileNotFoundError."""
    with pytest.raises(FileNotFoundError):
        load_settings(tmp_path / "absent.toml")


def test_config_file_directory_is_not_a_file(tmp_path: Path) -> None:
    """A directory given as the config file raises FileNotFoundError too."""
    with pytest.raises(FileNotFoundError):
        load_settings(tmp_path)


def test_groups_from_toml(tmp_path: Path) -> None:
    """[[groups]] tables configure the groups, with per-group defaults filled in."""
    path = write_toml(
        tmp_path,
        '[[groups]]\nname = "demo"\n\n'
        '[[groups]]\nname = "real-jpy"\ncurrency = "JPY"\ndigits = 0\ndefault_leverage = 50\n',
    )
    settings = load_settings(path)
    assert settings.groups == (
        GroupConfig(name="demo", currency="USD", digits=2, default_leverage=100),
        GroupConfig(name="real-jpy", currency="JPY", digits=0, default_leverage=50),
    )
    assert set(settings.groups_by_name()) == {"demo", "real-jpy"}
    assert str(settings.groups_by_name()["real-jpy"].quantum) == "1"


def test_group_unknown_key_is_error(tmp_path: Path) -> None:
    """An unknown key inside a [[groups]] table is refused."""
    path = write_toml(tmp_path, '[[groups]]\nname = "demo"\ncurrencey = "EUR"\n')
    with pytest.raises(pydantic.ValidationError):
        load_settings(path)


def test_example_file_equals_defaults() -> None:
    """config/gateway.example.toml loads and documents exactly the default settings (a missing
    file fails: the README points operators at it)."""
    assert EXAMPLE.is_file(), f"{EXAMPLE} is missing"
    loaded = load_settings(EXAMPLE)
    assert loaded.model_dump() == Settings().model_dump()
    assert loaded.model_dump() == load_settings().model_dump()


def test_metrics_off_by_default() -> None:
    """With nothing configured the metrics endpoint is off (port 0) and would bind loopback."""
    settings = load_settings()
    assert (settings.metrics_port, settings.metrics_host) == (0, "127.0.0.1")


def test_metrics_port_from_env_and_file(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """GATEWAY_METRICS_PORT sets metrics_port; metrics_port in the TOML file wins over it."""
    monkeypatch.setenv("GATEWAY_METRICS_PORT", "9464")
    monkeypatch.setenv("GATEWAY_METRICS_HOST", "0.0.0.0")
    assert (load_settings().metrics_port, load_settings().metrics_host) == (9464, "0.0.0.0")
    path = write_toml(tmp_path, "metrics_port = 9100\n")
    assert load_settings(path).metrics_port == 9100


@pytest.mark.parametrize("port", [-1, 65536, 100_000])
def test_metrics_port_out_of_range_is_error(port: int) -> None:
    """A metrics_port outside 0..65535 is refused and named."""
    with pytest.raises(pydantic.ValidationError, match="metrics_port"):
        load_settings(None, metrics_port=port)


@pytest.mark.parametrize(
    ("allow", "refused"),
    [
        (("0.0.0.0/1", "128.0.0.0/1"), True),  # every IPv4 address, piece by piece
        (("::/0",), False),  # named outright
        (("0.0.0.0/0",), False),
        (("10.0.0.0/8", "::1/128"), False),
    ],
)
def test_settlement_open_to_everyone_must_be_named(allow: tuple[str, ...], refused: bool) -> None:
    """On a public host, an allow-list covering every address must name 0.0.0.0/0 or ::/0."""
    settings = {"settlement_host": "0.0.0.0", "settlement_allow": allow}
    if refused:
        with pytest.raises(ValueError, match="admits every address"):
            load_settings(None, **settings)
    else:
        assert load_settings(None, **settings).settlement_allow == allow


@pytest.mark.parametrize("prefix", ["", "settlement_"])
def test_tls_files_go_together(prefix: str, tmp_path: Path) -> None:
    """A certificate without its key is refused rather than serving plain text."""
    with pytest.raises(ValueError, match="go together"):
        load_settings(None, **{f"{prefix}tls_cert_file": tmp_path / "cert.pem"})
