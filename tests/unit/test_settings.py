"""One settings class: the province file plus BUS_ environment variables; bad input stops start-up."""

from __future__ import annotations

from pathlib import Path

import pytest

from bus.errors import ConfigError
from bus.settings import load_settings

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "config" / "example-province.toml"


def test_example_province_has_the_shape_the_issue_asks_for() -> None:
    settings = load_settings(EXAMPLE)
    levels = [a.level.value for a in settings.agencies]
    assert levels.count("province") == 1
    assert levels.count("department") >= 3
    districts = [a for a in settings.agencies if a.level.value == "district"]
    assert len(districts) >= 2
    for district in districts:
        communes = [a for a in settings.agencies if a.parent == district.organ_id]
        assert len(communes) >= 2, district.name
    province = next(a for a in settings.agencies if a.level.value == "province")
    assert any(a.level.value == "commune" and a.parent == province.organ_id for a in settings.agencies)
    assert all(settings.secret_of(a) for a in settings.agencies)


def test_relative_paths_are_read_from_the_files_directory() -> None:
    settings = load_settings(EXAMPLE)
    assert settings.node.key is not None
    assert settings.path(settings.node.key) == ROOT / "config" / ".." / "demo-out/pki/nodes/000.00.90.H99.key"


def test_environment_overrides_the_file(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BUS_AMQP__PREFIX", "tinh-mau")
    monkeypatch.setenv("BUS_DATABASE__URL", "postgresql+asyncpg://bus@db/bus")
    monkeypatch.setenv("BUS_AGENCY_SECRETS", '{"000.00.01.H99": "bí-mật-thật"}')
    settings = load_settings(EXAMPLE)
    assert settings.amqp.prefix == "tinh-mau"
    assert settings.amqp.url.startswith("amqp://")  # untouched values stay the file's
    assert settings.database.url == "postgresql+asyncpg://bus@db/bus"
    home_affairs = next(a for a in settings.agencies if str(a.organ_id) == "000.00.01.H99")
    assert settings.secret_of(home_affairs) == "bí-mật-thật".encode()


def test_secrets_never_show_in_a_printed_setting() -> None:
    settings = load_settings(EXAMPLE)
    assert "demo-only" not in repr(settings)
    assert "demo-only" not in str(settings.agencies[0])


@pytest.mark.parametrize(
    ("edit", "field", "reason"),
    [
        (('level = "district"', 'level = "hamlet"'), "agencies.4.level", "Input should be"),
        (("port = 8080", 'port = "tám nghìn"'), "http.port", "valid integer"),
        (('organ_id = "000.00.90.H99"', 'organ_id = "không-phải-mã"'), "node.organ_id", ""),
        (("[http]", "[http]\nbogus = 1"), "http.bogus", "Extra inputs are not permitted"),
        (('parent = "000.00.21.H99"', 'parent = "000.00.29.H99"'), "", "which is not listed"),
    ],
)
def test_a_bad_file_names_the_field_and_the_reason(
    tmp_path: Path, edit: tuple[str, str], field: str, reason: str
) -> None:
    target = tmp_path / "bad.toml"
    text = EXAMPLE.read_text(encoding="utf-8")
    assert edit[0] in text
    target.write_text(text.replace(edit[0], edit[1], 1), encoding="utf-8")
    with pytest.raises(ConfigError) as caught:
        load_settings(target)
    assert field in str(caught.value)
    assert reason in str(caught.value)


def test_an_unreadable_file_is_a_config_error(tmp_path: Path) -> None:
    (tmp_path / "broken.toml").write_text("province = ", encoding="utf-8")
    with pytest.raises(ConfigError, match="cannot read configuration"):
        load_settings(tmp_path / "broken.toml")
    with pytest.raises(ConfigError, match="cannot read configuration"):
        load_settings(tmp_path / "missing.toml")


@pytest.mark.parametrize("secret", ["", "ngắn"])
def test_an_empty_or_short_secret_stops_start_up(monkeypatch: pytest.MonkeyPatch, secret: str) -> None:
    monkeypatch.setenv("BUS_AGENCY_SECRETS", f'{{"000.00.01.H99": "{secret}"}}')
    with pytest.raises(ConfigError, match=r"000\.00\.01\.H99 has \d+ bytes"):
        load_settings(EXAMPLE)


def test_demo_secrets_are_refused_when_listening_beyond_this_machine(monkeypatch: pytest.MonkeyPatch) -> None:
    assert load_settings(EXAMPLE).http.host == "127.0.0.1"  # the demo: fine on loopback
    monkeypatch.setenv("BUS_HTTP__HOST", "0.0.0.0")  # noqa: S104 - the case under test
    with pytest.raises(ConfigError, match="published demo value"):
        load_settings(EXAMPLE)


def test_recipients_per_envelope_are_capped_by_default_and_configurable(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    assert load_settings(EXAMPLE).intake.max_recipients == 500
    monkeypatch.setenv("BUS_INTAKE__MAX_RECIPIENTS", "40")
    settings = load_settings(EXAMPLE)
    assert settings.intake.max_recipients == 40
    monkeypatch.setenv("BUS_INTAKE__MAX_RECIPIENTS", "0")
    with pytest.raises(ConfigError, match=r"intake\.max_recipients"):
        load_settings(EXAMPLE)
