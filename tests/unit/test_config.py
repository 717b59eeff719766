from __future__ import annotations

from pathlib import Path

import pytest

from eventops.config import load_settings, redact_url
from eventops.errors import ConfigError


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "eventops.toml"
    path.write_text(text)
    return path


def test_embedded_defaults_live_under_dot_eventops(tmp_path: Path) -> None:
    settings = load_settings(tmp_path / "missing.toml", environ={})
    assert settings.bus_url == "sqlite:///.eventops/events.db"
    assert settings.store_url == "sqlite:///.eventops/eventops.db"
    assert settings.lake_url == ".eventops/lake"


def test_file_is_read_and_environment_wins(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        '[bus]\nurl = "kafka://broker:9092"\npartitions = 6\n[store]\nurl = "sqlite:///a.db"\n',
    )
    settings = load_settings(path, environ={"EVENTOPS_BUS_PARTITIONS": "12"})
    assert settings.bus_url == "kafka://broker:9092"
    assert settings.bus.partitions == 12
    assert settings.store_url == "sqlite:///a.db"


def test_home_moves_the_embedded_defaults(tmp_path: Path) -> None:
    settings = load_settings(tmp_path / "none.toml", environ={"EVENTOPS_HOME": "/srv/eo"})
    assert settings.bus_url == "sqlite:////srv/eo/events.db"


@pytest.mark.parametrize(
    ("toml", "field"),
    [
        ("[bus]\nurll = 'sqlite:///x.db'\n", "bus.urll"),
        ("colour = 'blue'\n", "colour"),
        ("[bus]\npartitions = 0\n", "bus.partitions"),
        ("[bus]\nurl = 'redis://localhost'\n", "bus.url"),
        ("[bus]\nurl = 'kafka://host:notaport'\n", "bus.url"),
        ("[bus]\nurl = 'kafka://'\n", "bus.url"),
        ("[store]\nurl = 'mysql://db/x'\n", "store.url"),
        ("[bus\n", None),
    ],
)
def test_bad_files_name_the_field(tmp_path: Path, toml: str, field: str | None) -> None:
    path = write(tmp_path, toml)
    with pytest.raises(ConfigError) as info:
        load_settings(path, environ={})
    if field is not None:
        assert info.value.field == field
    else:
        assert info.value.rule == "toml"


@pytest.mark.parametrize(
    ("var", "field"),
    [
        ("EVENTOPS_BUS_URLL", "bus.urll"),
        ("EVENTOPS_COLOUR", "colour"),
        ("EVENTOPS_STORE_URL", "store.url"),
    ],
)
def test_unknown_or_bad_variables_are_errors(tmp_path: Path, var: str, field: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_settings(tmp_path / "none.toml", environ={var: "ftp://x"})
    assert info.value.field == field


def test_a_named_config_file_must_exist(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        load_settings(environ={"EVENTOPS_CONFIG": str(tmp_path / "nope.toml")})
    assert info.value.field == "EVENTOPS_CONFIG"


def test_effective_settings_redact_passwords(tmp_path: Path) -> None:
    settings = load_settings(
        tmp_path / "none.toml",
        environ={
            # pragma: allowlist nextline secret
            "EVENTOPS_STORE_URL": "postgresql://app:s3cret@db:5432/eventops",
            "EVENTOPS_KAFKA_SASL_PASSWORD": "hunter2",  # pragma: allowlist secret
        },
    )
    shown = str(settings.effective())
    assert "s3cret" not in shown and "hunter2" not in shown
    assert "postgresql://app:***@db:5432/eventops" in shown


def test_redact_url_leaves_urls_without_password_alone() -> None:
    assert redact_url("kafka://a:9092,b:9092") == "kafka://a:9092,b:9092"


def test_the_configured_partition_count_reaches_either_backend(tmp_path: Path) -> None:
    from eventops.config import BusSettings, Settings
    from eventops.events.bus import open_configured_bus

    kafka = open_configured_bus(Settings(bus=BusSettings(url="kafka://127.0.0.1:1", partitions=7)))
    assert kafka.partitions == 7  # type: ignore[attr-defined]
    own = open_configured_bus(
        Settings(bus=BusSettings(url="kafka://127.0.0.1:1?partitions=2", partitions=7))
    )
    assert own.partitions == 2  # type: ignore[attr-defined]
    embedded = open_configured_bus(
        Settings(bus=BusSettings(url=f"sqlite:///{tmp_path}/e.db", partitions=5))
    )
    assert embedded.partitions == 5  # type: ignore[attr-defined]
    for bus in (kafka, own, embedded):
        bus.close()


def test_pipeline_and_tracking_settings(tmp_path: Path) -> None:
    settings = load_settings(
        tmp_path / "none.toml",
        environ={"EVENTOPS_PIPELINES_EXECUTOR": "ray://head:10001", "EVENTOPS_HOME": "/srv/eo"},
    )
    assert settings.pipelines.executor == "ray://head:10001"
    assert settings.tracking_uri == "sqlite:////srv/eo/mlflow.db"
    with pytest.raises(ConfigError) as info:
        load_settings(tmp_path / "none.toml", environ={"EVENTOPS_PIPELINES_EXECUTOR": "dask"})
    assert info.value.field == "pipelines.executor"


def test_aws_integrations_are_off_until_named(tmp_path: Path) -> None:
    settings = load_settings(tmp_path / "none.toml", environ={})
    assert settings.aws.eventbridge_bus is None
    assert settings.aws.kinesis_stream is None
    assert settings.aws.cloudwatch_namespace is None


def test_aws_settings_from_file_and_environment(tmp_path: Path) -> None:
    path = write(tmp_path, '[aws]\nregion = "eu-west-1"\nkinesis_types = ["model.*"]\n')
    settings = load_settings(
        path,
        environ={
            "EVENTOPS_AWS_EVENTBRIDGE_BUS": "platform",
            "EVENTOPS_AWS_EVENTBRIDGE_TYPES": "model.version.*, alert.*",
        },
    )
    assert settings.aws.region == "eu-west-1"
    assert settings.aws.eventbridge_bus == "platform"
    assert settings.aws.eventbridge_types == ["model.version.*", "alert.*"]
    assert settings.aws.kinesis_types == ["model.*"]


def test_an_unknown_aws_variable_is_named(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        load_settings(tmp_path / "none.toml", environ={"EVENTOPS_AWS_EVENTBRIGE_BUS": "x"})
    assert info.value.field == "aws.eventbrige_bus"
    assert info.value.rule == "known-key"
