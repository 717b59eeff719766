"""Names the registry accepts, and the tags it keeps on model versions.

MLflow checks a model name only when it is sent to the server, and then with a message about
file paths; checking here names the field and the rule before anything is saved. Beyond
MLflow's own rule (no `/` or `:`, nothing that normalises to another path) a name must not hold
`@` (it would split `models:/<name>@<alias>`) nor quotes or backslashes (they break MLflow's
search filters, which quote names with `'`).
"""

from __future__ import annotations

import re

from eventops.errors import ValidationError

MODEL_NAME_RULE = (
    "1-255 characters, none of / : @ ' \" ` \\, not blank, not starting with a dot or a space"
)
_FORBIDDEN = frozenset("/:@'\"`\\")
ALIAS = re.compile(r"^[\w\-]{1,255}$")
_VERSION_ALIAS = re.compile(r"^[vV]\d+$")

CHAMPION = "champion"
CHALLENGER = "challenger"

# Tags on every version registered by `register_model`: where it came from and how to judge it.
TAG_RUN_ID = "eventops.run_id"
TAG_PIPELINE = "eventops.pipeline"
TAG_HOLDOUT_URI = "eventops.holdout_uri"
TAG_LABEL = "eventops.label"
TAG_METRICS = "eventops.metrics"
TAG_FLAVOR = "eventops.flavor"
TAG_EVENT_ID = "eventops.event_id"


def check_model_name(name: object, field: str = "name") -> str:
    if (
        not isinstance(name, str)
        or not name.strip()
        or len(name) > 255
        or name[0] in ". "
        or any(c in _FORBIDDEN for c in name)
    ):
        raise ValidationError(
            f"model name {name!r} is not valid: {MODEL_NAME_RULE}",
            field=field,
            rule="model-name",
        )
    return name


def check_alias(alias: object, field: str = "alias") -> str:
    if (
        not isinstance(alias, str)
        or not ALIAS.match(alias)
        or alias.lower() == "latest"
        or _VERSION_ALIAS.match(alias)
    ):
        raise ValidationError(
            f"alias {alias!r} is not valid: letters, digits, _ and -, not 'latest' nor v<N>",
            field=field,
            rule="alias-name",
        )
    return alias


def check_version(version: object, field: str = "version") -> str:
    """A model version as MLflow numbers them: a positive integer, kept as text."""
    text = str(version).strip()
    if isinstance(version, bool) or not (text.isascii() and text.isdigit()) or int(text) < 1:
        raise ValidationError(
            f"model version {version!r} must be a positive integer", field=field, rule="version"
        )
    return str(int(text))
