"""Alert rules and channels without a store: declarations, matching, signatures, rendering,
and the bounded retries of one delivery (over httpx's in-memory transport).

(Named test_alert_rules.py: tests/integration/test_alerts.py holds the service tests, and two
test modules of one basename cannot be collected in the same run.)
"""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest

from eventops.errors import ConfigError, ValidationError
from eventops.events.envelope import Event
from eventops.monitoring.alerts import AlertRule, trial_message
from eventops.monitoring.channels import (
    SIGNATURE_HEADER,
    TIMESTAMP_HEADER,
    AlertMessage,
    DeliveryError,
    Log,
    Poster,
    Slack,
    Webhook,
    deliver,
    sign,
    slack_payload,
    verify_signature,
    webhook_payload,
)

DRIFT = "monitor.drift.detected"
CHECK = "monitor.check.completed"


def rule(**overrides: object) -> AlertRule:
    options: dict[str, object] = {
        "name": "drift",
        "on": [DRIFT, "monitor.performance.degraded"],
        "where": {"monitor": "churn-drift"},
        "group_by": "monitor",
        "resolve_on": [CHECK],
    }
    return AlertRule(**{**options, **overrides})


def event(type_: str = DRIFT, **data: object) -> Event:
    return Event(type=type_, subject="churn-drift", data={"monitor": "churn-drift", **data})


# ---------------------------------------------------------------------- declarations
@pytest.mark.parametrize(
    ("overrides", "field", "rule_name"),
    [
        ({"name": "Drift!"}, "alerts.Drift!.name", "string_pattern_mismatch"),
        ({"on": []}, "alerts.drift.on", "too_short"),
        ({"on": ["monitor.drift.detectd"]}, "alerts.drift.on", "catalog"),
        ({"on": ["not a type"]}, "alerts.drift.on", "type"),
        ({"on": ["alert.*"]}, "alerts.drift.on", "no-alert-loop"),
        ({"resolve_on": ["alert.resolved"]}, "alerts.drift.resolve_on", "no-alert-loop"),
        ({"severity": "page-me"}, "alerts.drift.severity", "literal_error"),
        ({"cooldown": "ten minutes"}, "alerts.drift.cooldown", "duration"),
        ({"channels": []}, "alerts.drift.channels", "too_short"),
        ({"channels": [{"kind": "pager"}]}, "alerts.drift.channels[0]", "union_tag_invalid"),
        ({"channels": [{"kind": "slack"}]}, "alerts.drift.channels.slack.webhook_url_env", "one-source"),
        ({"group_by": ""}, "alerts.drift.group_by", "string_too_short"),
        ({"repeat": True}, "alerts.drift.repeat", "known-field"),
    ],
)  # fmt: skip
def test_a_bad_declaration_names_the_field_and_the_rule(
    overrides: dict[str, object], field: str, rule_name: str
) -> None:
    with pytest.raises(ValidationError) as caught:
        rule(**overrides)
    assert caught.value.field == field
    assert caught.value.rule == rule_name


@pytest.mark.parametrize(
    ("make", "field", "rule_name"),
    [
        (lambda: Slack(webhook_url="https://hooks.slack.com/services/T/B/X"), "slack.webhook_url", "secret-from-env"),
        (lambda: Webhook(url="https://x.example", secret="s3cret"), "webhook.secret", "secret-from-env"),
        (lambda: Webhook(url="https://u:pw@x.example", secret_env="S"), "webhook.url", "secret-from-env"),
        (lambda: Webhook(url="ftp://x.example", secret_env="S"), "webhook.url", "url"),
        (lambda: Webhook(url="https://x.example"), "webhook.secret_env", "one-source"),
        (lambda: Webhook(url="https://x.example", url_env="U", secret_env="S"), "webhook.url", "one-source"),
        (lambda: Slack(webhook_url_env="EVENTOPS_SLACK"), "slack.webhook_url_env", "env-name"),
        (lambda: Slack(webhook_url_env="not a name"), "slack.webhook_url_env", "env-name"),
        (lambda: Slack(webhook_url_env="S", max_attempts=0), "slack.max_attempts", "greater_than_equal"),
        (lambda: Log(level="loud"), "log.level", "literal_error"),
    ],
)  # fmt: skip
def test_a_bad_channel_names_the_field_and_never_echoes_a_secret(
    make: object, field: str, rule_name: str
) -> None:
    with pytest.raises(ValidationError) as caught:
        make()  # type: ignore[operator]
    assert (caught.value.field, caught.value.rule) == (field, rule_name)
    assert "s3cret" not in str(caught.value) and "pw@" not in str(caught.value)


def test_the_definition_names_variables_never_values() -> None:
    declared = rule(channels=[Slack(webhook_url_env="SLACK_URL"), Log()])
    definition = declared.definition()
    assert definition["channels"][0]["webhook_url_env"] == "SLACK_URL"
    assert declared.channel_ids() == ["0-slack", "1-log"]
    assert declared.cooldown_seconds == 600


def test_missing_secrets_are_named_by_their_variable(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as caught:
        Slack(webhook_url_env="SLACK_URL").check({})
    assert "SLACK_URL" in str(caught.value) and caught.value.rule == "secret-set"
    with pytest.raises(ConfigError, match="cannot read secret file"):
        Webhook(url="https://x.example", secret_file=str(tmp_path / "nope")).check({})
    (tmp_path / "secret").write_text("s3cret\n")
    Webhook(url="https://x.example", secret_file=str(tmp_path / "secret")).check({})


# ---------------------------------------------------------------------- matching
def test_matching_filters_on_type_and_data() -> None:
    declared = rule()
    assert declared.matches(event())
    assert declared.matches(event("monitor.performance.degraded"))
    assert not declared.matches(event(CHECK))
    assert not declared.matches(Event(type=DRIFT, data={"monitor": "other"}))
    assert not declared.matches(Event(type=DRIFT, data={}))


def test_the_group_is_the_group_by_field_else_the_subject() -> None:
    assert rule().group_of(event()) == "churn-drift"
    no_field = Event(type=DRIFT, subject="subj", data={"monitor": "churn-drift"})
    assert rule(group_by="deployment").group_of(no_field) == "subj"
    assert rule(group_by=None).group_of(no_field) == "subj"


@pytest.mark.parametrize(
    ("on", "data", "resolves"),
    [
        ([DRIFT], {"drifted": False}, True),
        ([DRIFT], {"drifted": True}, False),
        ([DRIFT], {}, False),  # a missing field does not resolve
        ([DRIFT], {"degraded": False}, False),
        ([DRIFT, "monitor.performance.degraded"], {"drifted": False}, False),
        ([DRIFT, "monitor.performance.degraded"], {"drifted": False, "degraded": False}, True),
        (["monitor.performance.degraded"], {"degraded": False, "drifted": True}, True),
        (["dataset.batch.rejected"], {"drifted": False}, True),
        (["dataset.batch.rejected"], {}, False),
        ([DRIFT], {"drifted": False, "status": "error", "error": "no rows"}, False),
    ],
)
def test_a_check_resolves_only_when_its_data_says_the_condition_cleared(
    on: list[str], data: dict[str, object], resolves: bool
) -> None:
    assert rule(on=on).resolves(event(CHECK, **data)) is resolves


def test_the_conditions_that_fired_the_alert_decide() -> None:
    both = rule(on=[DRIFT, "monitor.performance.degraded"])
    assert both.resolves(event(CHECK, drifted=False), ["drifted"])
    assert not both.resolves(event(CHECK, drifted=False), ["drifted", "degraded"])
    assert not both.resolves(event(CHECK, degraded=False), ["drifted"])


def test_resolve_applies_the_filters_the_event_carries() -> None:
    declared = rule(on=[DRIFT], resolve_on=[CHECK, "deployment.updated"])
    other = Event(type=CHECK, data={"monitor": "other", "drifted": False})
    assert not declared.resolves(other)
    update = Event(
        type="deployment.updated", data={"deployment": "d", "model": "m", "version": "2"}
    )
    assert declared.resolves(update)  # no 'monitor' to compare, and any such event clears


def test_summaries_from_a_template_or_the_event() -> None:
    templated = rule(summary="{monitor}: {drift_share:.0%} drifted ({missing})")
    assert (
        templated.summary_for(event(drift_share=0.5), "g") == "churn-drift: 50% drifted ({missing})"
    )
    assert rule(summary="{drift_share:.0%}").summary_for(event(), "g") == "{drift_share:.0%}"
    drift = event(drifted_columns=["age", "plan"])
    assert rule().summary_for(drift, "g") == "churn-drift: drift in 2 column(s): age, plan"
    perf = event("monitor.performance.degraded", metric="auc", value=0.61)
    assert rule().summary_for(perf, "g") == "churn-drift: auc degraded to 0.61"


# ---------------------------------------------------------------------- signatures
def test_a_signature_verifies_and_anything_changed_does_not() -> None:
    body, ts = b'{"rule":"drift"}', "1700000000"
    header = sign("s3cret", body, ts)
    assert header.startswith("sha256=") and len(header) == 7 + 64
    assert verify_signature("s3cret", body, ts, header, now=1700000100)
    assert verify_signature(b"s3cret", body, ts, header, tolerance=300, now=1700000100)
    assert not verify_signature("wrong", body, ts, header, now=1700000100)
    assert not verify_signature("s3cret", body + b" ", ts, header, now=1700000100)
    assert not verify_signature("s3cret", body, "1700000001", header, now=1700000100)
    assert not verify_signature("s3cret", body, ts, header, now=1700000000 + 301)
    assert not verify_signature("s3cret", body, "soon", header)


# ---------------------------------------------------------------------- rendering
def message(**overrides: object) -> AlertMessage:
    cause = Event(
        type=DRIFT, subject="churn-drift", correlationid="corr-1",
        data={"monitor": "churn-drift", "drifted_columns": [f"c{i}" for i in range(12)]},
    )  # fmt: skip
    options: dict[str, object] = {
        "id": "n1", "rule": "drift", "severity": "warning", "status": "firing",
        "summary": "churn-drift: drift in <12> columns", "group": "churn-drift",
        "since": "2026-11-24T10:00:00Z", "count": 3, "event": cause.to_dict(),
    }  # fmt: skip
    return AlertMessage(**{**options, **overrides})  # type: ignore[arg-type]


def test_slack_gets_block_kit_with_the_facts() -> None:
    payload = slack_payload(message())
    header, section, context = payload["blocks"]
    assert header["type"] == "header" and header["text"]["text"] == "FIRING: drift (warning)"
    fields = {f["text"].split("\n")[0]: f["text"].split("\n")[1] for f in section["fields"]}
    assert fields["*Rule*"] == "drift" and fields["*Severity*"] == "warning"
    assert fields["*Monitor*"] == "churn-drift"
    assert fields["*Drifted columns*"].endswith("c9 (+2 more)")
    perf = Event(type="monitor.performance.degraded",
                 data={"monitor": "m", "metric": "auc", "value": 0.61, "min": 0.7})  # fmt: skip
    perf_fields = slack_payload(message(event=perf.to_dict()))["blocks"][1]["fields"]
    assert perf_fields[3]["text"] == "*Metric*\nauc = 0.61 (min 0.7)"
    assert "*Time*" in fields
    assert section["text"]["text"] == "churn-drift: drift in &lt;12&gt; columns"
    text = context["elements"][0]["text"]
    assert "correlation `corr-1`" in text and "seen 3x" in text
    resolved = slack_payload(message(status="resolved"))["blocks"][0]["text"]["text"]
    assert resolved.startswith("RESOLVED")
    assert slack_payload(message(notification=2))["blocks"][0]["text"]["text"].startswith("STILL")


def test_the_webhook_body_leads_with_the_documented_keys() -> None:
    body = webhook_payload(message())
    assert list(body)[:5] == ["rule", "severity", "status", "summary", "event"]
    assert body["event"]["type"] == DRIFT and body["id"] == "n1"


def test_the_trial_message_is_marked_as_a_test() -> None:
    trial = trial_message(rule())
    assert trial.test and trial.rule == "drift"
    assert slack_payload(trial)["blocks"][0]["text"]["text"].startswith("TEST FIRING")


# ---------------------------------------------------------------------- one delivery
class Script:
    """A transport answering with the given statuses (or raising for None)."""

    def __init__(self, *answers: int | None) -> None:
        self.answers = list(answers)
        self.requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        status = self.answers.pop(0)
        if status is None:
            raise httpx.ConnectError("connection refused", request=request)
        return httpx.Response(status, text="no_service" if status == 404 else "ok")


SLACK_URL = "https://hooks.slack.example/services/T0/B0/tok3n"


def send(script: Script, channel: Slack | Webhook, sleeps: list[float]) -> int:
    environ = {"SLACK_URL": SLACK_URL, "HOOK_SECRET": "s3cret"}  # pragma: allowlist secret
    poster = Poster(httpx.MockTransport(script))
    return deliver(channel, message(), poster, environ, sleep=sleeps.append)


def test_transient_failures_are_retried_with_backoff() -> None:
    script, sleeps = Script(None, 503, 200), []
    channel = Slack(webhook_url_env="SLACK_URL", max_attempts=3, backoff=0.5)
    assert send(script, channel, sleeps) == 3
    assert sleeps == [0.5, 1.0]
    assert json.loads(script.requests[-1].content)["blocks"][0]["type"] == "header"


def test_attempts_are_bounded_and_the_error_hides_the_url() -> None:
    script, sleeps = Script(None, None), []
    with pytest.raises(DeliveryError) as caught:
        send(script, Slack(webhook_url_env="SLACK_URL", max_attempts=2), sleeps)
    assert "after 2 attempt(s)" in str(caught.value) and "tok3n" not in str(caught.value)
    assert len(sleeps) == 1


def test_a_refusal_is_not_retried_in_place() -> None:
    script, sleeps = Script(404), []
    with pytest.raises(DeliveryError) as caught:
        send(script, Slack(webhook_url_env="SLACK_URL"), sleeps)
    assert not caught.value.retryable and "HTTP 404: no_service" in str(caught.value)
    assert sleeps == []


def test_the_webhook_is_signed_over_timestamp_and_body() -> None:
    script, sleeps = Script(204), []
    send(script, Webhook(url="https://receiver.example/hook", secret_env="HOOK_SECRET"), sleeps)
    request = script.requests[0]
    assert verify_signature(
        "s3cret",
        request.content,
        request.headers[TIMESTAMP_HEADER],
        request.headers[SIGNATURE_HEADER],
    )
    assert request.headers["X-EventOps-Delivery"] == "n1"


def test_the_log_channel_writes_a_structured_record(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level("INFO", logger="ops.alerts")
    deliver(Log(level="info", logger="ops.alerts"), message(), Poster(), {})
    [record] = caplog.records
    assert record.getMessage().startswith("alert firing: drift [warning]")
    assert record.eventops_alert["group"] == "churn-drift"  # type: ignore[attr-defined]
    assert record.eventops_alert["event_id"]  # type: ignore[attr-defined]
