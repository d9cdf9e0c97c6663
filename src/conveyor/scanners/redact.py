"""Keep secrets out of every report and every console line.

Trivy already masks the secrets it finds, and bandit quotes the hard-coded password it found;
neither is trusted alone. Every string a report writes passes through :func:`redact`, which masks
well-known token shapes and the value of ``password = "…"``-style assignments, keeping a few
leading characters so a person can still tell which secret is meant.
"""

from __future__ import annotations

import re

MASK = "…[REDACTED]"
KEEP = 4

_TOKENS = re.compile(
    r"""
    \b(?:
        gh[pousr]_[A-Za-z0-9]{20,}            # GitHub tokens
      | github_pat_[A-Za-z0-9_]{20,}          # GitHub fine-grained tokens
      | (?:AKIA|ASIA)[A-Z0-9]{16}             # AWS access key ids
      | xox[abposr]-[A-Za-z0-9-]{10,}         # Slack tokens
      | sk_live_[A-Za-z0-9]{16,}              # Stripe
      | glpat-[A-Za-z0-9_-]{20,}              # GitLab
      | npm_[A-Za-z0-9]{36}                   # npm
      | pypi-[A-Za-z0-9_-]{40,}               # PyPI
      | eyJ[A-Za-z0-9_-]{10,}\.[A-Za-z0-9_-]{10,}\.[A-Za-z0-9_-]{10,}  # JWTs
    )
    """,
    re.VERBOSE,
)
_PRIVATE_KEY = re.compile(
    r"-----BEGIN [A-Z ]*PRIVATE KEY-----.*?(?:-----END [A-Z ]*PRIVATE KEY-----|$)", re.DOTALL
)
# password = "hunter2", 'api_key': 'abc', TOKEN=abc (quoted or bare values).
_ASSIGNED = re.compile(
    r"""(?ix)
    (?P<key>[\w.-]*(?:pass(?:word|wd)?|secret|token|api[_-]?key|credential)[\w.-]*)
    (?P<sep>['"]?\s*[:=]\s*)
    (?P<quote>['"]?)
    (?!(?:true|false|null|none|yes|no)\b|\$)     # booleans and ${{ }} / $VAR references
    (?P<value>[^'"\s,;)}]{3,})
    (?![^'"\s,;)}])(?!\s*[:=])  # whole words only; a name being assigned is no value
    """
)
# bandit: "Possible hardcoded password: 'hunter2'"
_BANDIT = re.compile(r"(?P<prefix>hardcoded password:\s*)'(?P<value>[^']*)'", re.IGNORECASE)


def mask(value: str) -> str:
    if not value or set(value) == {"*"} or MASK in value:
        return value  # already masked (trivy masks with asterisks)
    return value[: min(KEEP, len(value) // 3)] + MASK


def redact(text: str) -> str:
    """``text`` with anything that looks like a secret masked."""
    if not text:
        return text
    text = _PRIVATE_KEY.sub("-----BEGIN PRIVATE KEY-----" + MASK, text)
    text = _TOKENS.sub(lambda m: mask(m.group(0)), text)
    text = _BANDIT.sub(lambda m: f"{m['prefix']}'{mask(m['value'])}'", text)
    return _ASSIGNED.sub(
        lambda m: f"{m['key']}{m['sep']}{m['quote']}{mask(m['value'])}",
        text,
    )
