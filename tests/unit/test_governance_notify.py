"""Notifications: their words, their delivery through apprise to a local server, and secrets."""

from __future__ import annotations

import io
import sys
import time
from pathlib import Path

import pytest

from conveyor import config as config_mod
from conveyor import notify
from conveyor.console import Console
from conveyor.errors import ConfigError
from conveyor.ledger import ReleaseRecord

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from test_governance_fakes import recording_server

TOKEN = "hook-Zq8v1sX4kP0tR7mN"  # noqa: S105 - a fake, to prove it never leaks


def record(**changes: object) -> ReleaseRecord:
    base = ReleaseRecord(
        id="r0007",
        environment="production",
        kind="promote",
        version="1.4.0",
        commit="0123456789abcdef" * 2 + "01234567",
        services={
            "api": {"image_id": "sha256:" + "a" * 64},
            "web": {"image_id": "sha256:" + "b" * 64},
        },
        who="bob",
        started=1000.0,
        ended=1012.5,
        approval={"approver": "alice"},
    )
    for key, value in changes.items():
        setattr(base, key, value)
    return base


def test_each_event_says_what_happened() -> None:
    started = notify.deploy_message("started", record(ended=None))
    assert started.title == "production: promote of 1.4.0 started"
    assert "images: api aaaaaaaaaaaa, web bbbbbbbbbbbb" in started.body
    assert "approved by: alice" in started.body and "took" not in started.body
    assert started.level == "info"

    ok = notify.deploy_message("succeeded", record(outcome="succeeded"), url="http://x/")
    assert ok.level == "success" and "took: 12.5 s" in ok.body and "url: http://x/" in ok.body

    failed = notify.deploy_message(
        "failed",
        record(outcome="failed", failed_phase="verify", reason="error rate 12% > 0%"),
        serving="1.3.0 (r0006) is still serving",
    )
    assert failed.title == "production: promote of 1.4.0 failed in verify"
    assert "failed phase: verify" in failed.body and "reason: error rate 12% > 0%" in failed.body
    assert "serving: 1.3.0 (r0006) is still serving" in failed.body
    assert failed.level == "failure"

    back = notify.deploy_message("rolled-back", record(kind="rollback", rollback_of="r0007"))
    assert back.title == "production: rollback of 1.4.0 rolled back"
    assert "rollback of: r0007" in back.body and back.level == "warning"


def test_secret_values_cover_the_url_and_its_token_parts() -> None:
    url = f"json://user:pa55word-xyz@127.0.0.1:9/hooks/{TOKEN}?key=qs-secret-99"
    values = notify.secret_values([url], ["s3cr3t-value", "abc"])
    assert {url, "pa55word-xyz", TOKEN, "qs-secret-99", "s3cr3t-value"} <= values
    assert "abc" not in values and "hooks" not in values  # short parts are not secrets
    text = f"failed: connect {url} with s3cr3t-value, token {TOKEN}, ghp_{'x' * 36}"
    redacted = notify.redact(text, values)
    for secret in (url, TOKEN, "pa55word-xyz", "s3cr3t-value", "ghp_" + "x" * 36):
        assert secret not in redacted
    assert "[REDACTED]" in redacted


def quiet_console() -> tuple[Console, io.StringIO]:
    out = io.StringIO()
    return Console(out), out


def test_a_message_reaches_a_json_webhook_with_secrets_masked(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with recording_server() as hook:
        url = f"json://127.0.0.1:{hook.port}/hooks/{TOKEN}"
        console, printed = quiet_console()
        notifier = notify.Notifier(
            targets=[notify.Target("target 1 (env:HOOK, json://…)", url)],
            events=config_mod.NOTIFY_EVENTS,
            timeout=5,
            out=console,
            secrets=notify.secret_values([url], ["s3cr3t-value"]),
        )
        leaky = record(
            outcome="failed", failed_phase="ready", reason=f"env had s3cr3t-value {TOKEN}"
        )
        notifier.send(notify.deploy_message("failed", leaky))
        assert notifier.wait() == []
    (request,) = hook.requests
    assert request.method == "POST" and request.path == f"/hooks/{TOKEN}"
    assert request.body["title"] == "production: promote of 1.4.0 failed in ready"
    assert request.body["type"] == "failure"
    assert "failed phase: ready" in request.body["message"]
    assert "s3cr3t-value" not in request.raw.decode() and TOKEN not in request.raw.decode()
    assert "[REDACTED]" in request.body["message"]
    assert printed.getvalue() == "" and capsys.readouterr().err == ""


def test_only_configured_events_are_sent() -> None:
    with recording_server() as hook:
        url = f"json://127.0.0.1:{hook.port}/x"
        notifier = notify.Notifier(
            targets=[notify.Target("t", url)],
            events=("failed",),
            timeout=5,
            out=quiet_console()[0],
        )
        notifier.send(notify.deploy_message("started", record()))
        notifier.send(notify.deploy_message("failed", record(failed_phase="smoke")))
        notifier.wait()
    assert [r.body["type"] for r in hook.requests] == ["failure"]


def test_an_undeliverable_notification_is_a_warning_that_names_no_url(
    capsys: pytest.CaptureFixture[str], free_port: object
) -> None:
    port = free_port()  # type: ignore[operator]
    url = f"json://127.0.0.1:{port}/hooks/{TOKEN}"  # nothing listens there
    with recording_server() as refusing:
        refusing.routes[("POST", "/down")] = (500, {})
        bad_status = f"json://127.0.0.1:{refusing.port}/down"
        console, printed = quiet_console()
        notifier = notify.Notifier(
            targets=[
                notify.Target("target 1 (env:HOOK, json://…)", url),
                notify.Target("target 2 (env:HOOK2, json://…)", bad_status),
            ],
            events=config_mod.NOTIFY_EVENTS,
            timeout=2,
            out=console,
        )
        began = time.monotonic()
        notifier.send(notify.deploy_message("started", record()))
        failed = notifier.wait()
        assert time.monotonic() - began < 10
    assert failed == [
        ("started", "target 1 (env:HOOK, json://…)"),
        ("started", "target 2 (env:HOOK2, json://…)"),
    ]
    err = capsys.readouterr().err
    assert "notification 'started' could not be delivered to target 1 (env:HOOK" in err
    assert TOKEN not in err + printed.getvalue() and str(port) not in err


def test_notifier_for_resolves_references_and_skips_unset_ones(
    monkeypatch: pytest.MonkeyPatch, repo_config: config_mod.Config
) -> None:
    monkeypatch.setenv("T_HOOK", f"json://127.0.0.1:9/{TOKEN}")
    monkeypatch.delenv("T_UNSET", raising=False)
    monkeypatch.setenv("GITHUB_TOKEN", "ghs_" + "q" * 36)
    cfg = config_mod.parse(
        {
            "notifications": {"urls": ["env:T_HOOK", "env:T_UNSET"], "timeout": 3},
            "images": {"api": {"dockerfile": "d", "kind": "python-service"}},
            "environments": {
                "prod": {
                    "notify": ["env:T_HOOK"],
                    "services": {"api": {"ports": {"blue": 1001, "green": 1002}}},
                }
            },
        },
        Path("deploy.toml"),
    )
    console, printed = quiet_console()
    notifier = notify.notifier_for(cfg, cfg.environments["prod"], console)
    assert [t.label for t in notifier.targets] == [
        "target 1 (env:T_HOOK), json://…",
        "target 3 (env:T_HOOK), json://…",
    ]
    assert "env:T_UNSET is not set here" in printed.getvalue()
    assert TOKEN not in printed.getvalue()
    assert "ghs_" + "q" * 36 in notifier.secrets and TOKEN in notifier.secrets
    assert notifier.timeout == 3


@pytest.mark.parametrize(
    ("table", "message"),
    [
        ({"urls": [f"json://127.0.0.1/{TOKEN}"]}, "must be a reference 'env:VARIABLE'"),
        ({"urls": "env:X"}, "expected an array of strings"),
        ({"events": ["faild"]}, "did you mean 'failed'"),
        ({"timout": 3}, "did you mean 'timeout'"),
    ],
)
def test_notification_config_is_validated_without_echoing_urls(
    table: dict[str, object], message: str
) -> None:
    with pytest.raises(ConfigError, match=message) as info:
        config_mod.parse({"notifications": table}, Path("deploy.toml"))
    assert TOKEN not in str(info.value)


def test_canary_windows_and_a_flag_kill_are_announced_with_their_numbers() -> None:
    from conveyor.analysis import Verdict

    passed = Verdict("pass", "within-thresholds", 25, 30.0, "api: canary 0/120 errors")
    failed = Verdict("fail", "fail-fast", 5, 1.5, "api: canary 12/60 errors against stable 0/900")
    with recording_server() as hook:
        announcer = notify.Announcer.__new__(notify.Announcer)
        announcer.notifier = notify.Notifier(
            targets=[notify.Target("t", f"json://127.0.0.1:{hook.port}/x")],
            events=config_mod.NOTIFY_EVENTS,
            timeout=5,
            out=quiet_console()[0],
        )
        announcer.canary_window(record(), passed)
        announcer.canary_window(record(), failed)
        announcer.flag_killed("production", "new-notes-view", failed)
        assert announcer.notifier.wait() == []
    titles = [r.body["title"] for r in hook.requests]
    assert titles == [
        "production: canary of 1.4.0 at 25%: pass",
        "production: canary of 1.4.0 at 5%: fail — aborting",
        "production: flag new-notes-view turned off at 5% (errors)",
    ]
    assert [r.body["type"] for r in hook.requests] == ["info", "failure", "failure"]
    assert "12/60 errors against stable 0/900" in hook.requests[1].body["message"]
    assert "[fail-fast]" in hook.requests[2].body["message"]
