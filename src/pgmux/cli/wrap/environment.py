"""What `pgmux wrap` reads from the environment: which URL variables to pool, whether it is on,
and the [pgbouncer] settings given as PGMUX_<NAME> / PGBOUNCER_<NAME>."""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping, Sequence

from pgmux.config import Settings, values
from pgmux.config.settings import convert

DEFAULT_URL_VARS = ("DATABASE_URL",)
URL_LIST_VARS = ("PGMUX_URLS", "PGBOUNCER_URLS")  # the first one set wins
ENABLED_VARS = ("PGMUX_ENABLED", "PGBOUNCER_ENABLED")

# NOTE: the buildpack's PGBOUNCER_<NAME> variables (and the three it reads besides the usual
# twelve), each also readable as PGMUX_<NAME>, which wins. NAME.lower() is the [pgbouncer] key.
SETTING_NAMES = (
    "POOL_MODE",
    "MAX_CLIENT_CONN",
    "DEFAULT_POOL_SIZE",
    "MIN_POOL_SIZE",
    "RESERVE_POOL_SIZE",
    "RESERVE_POOL_TIMEOUT",
    "SERVER_LIFETIME",
    "SERVER_IDLE_TIMEOUT",
    "LOG_CONNECTIONS",
    "LOG_DISCONNECTIONS",
    "LOG_POOLER_ERRORS",
    "STATS_PERIOD",
    "SERVER_RESET_QUERY",
    "IGNORE_STARTUP_PARAMETERS",
    "QUERY_WAIT_TIMEOUT",
    "AUTH_TYPE",
)
# NOTE: where wrap's defaults differ from PgBouncer's, they are the buildpack's, so that moving
# an app from the buildpack to pgmux does not change how many server connections it opens.
DEFAULT_SETTINGS = {"pool_mode": "transaction", "default_pool_size": "1",
                    "reserve_pool_size": "1"}


class WrapError(Exception):
    """A problem found before CMD runs; wrap prints it and exits non-zero."""


def _env(env: Mapping[str, str], *names: str) -> str | None:
    """The first of ``names`` set to something other than blanks, stripped."""
    for name in names:
        value = env.get(name, "").strip()
        if value:
            return value
    return None


def wrap_enabled(env: Mapping[str, str]) -> bool:
    """False when PGMUX_ENABLED (else PGBOUNCER_ENABLED) says 0/false/no/off."""
    text = _env(env, *ENABLED_VARS)
    if text is None:
        return True
    try:
        return values.parse_bool(text)
    except ValueError:
        name = next(n for n in ENABLED_VARS if env.get(n, "").strip())
        raise WrapError(f"{name}: invalid boolean '{text}'") from None


def url_var_names(cli: Sequence[str] | None, env: Mapping[str, str]) -> list[str]:
    """The URL variables to pool: --url-vars, else $PGMUX_URLS, else $PGBOUNCER_URLS, else
    DATABASE_URL. Lists are split on blanks and commas; duplicates are dropped."""
    if cli:
        raw = " ".join(cli)
    else:
        raw = _env(env, *URL_LIST_VARS) or " ".join(DEFAULT_URL_VARS)
    names: list[str] = []
    for name in re.split(r"[\s,]+", raw):
        if not name or name in names:
            continue
        if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name):
            raise WrapError(f"'{name}' is not an environment variable name")
        names.append(name)
    if not names:
        raise WrapError("no URL variables named")
    return names


def settings_from_env(env: Mapping[str, str]) -> dict[str, str]:
    """[pgbouncer] key -> text from PGMUX_<NAME> / PGBOUNCER_<NAME> over DEFAULT_SETTINGS, each
    checked like the ini loader checks it. DEFAULT_POOL_SIZE may be `auto` (kept as is: it
    goes onto the database entries as pool_size=auto). Raises WrapError."""
    fields = {f.name: f for f in dataclasses.fields(Settings)}
    out = dict(DEFAULT_SETTINGS)
    for name in SETTING_NAMES:
        pgmux_var, buildpack_var = f"PGMUX_{name}", f"PGBOUNCER_{name}"
        text = _env(env, pgmux_var, buildpack_var)
        if text is None:
            continue
        source = pgmux_var if env.get(pgmux_var, "").strip() else buildpack_var
        key = name.lower()
        if any(ch in text for ch in "\r\n\0"):
            raise WrapError(f"{source}: the value must be one line")
        if key == "default_pool_size" and text.lower() == "auto":
            out[key] = "auto"
            continue
        try:
            convert(fields[key], text)
        except ValueError as exc:
            raise WrapError(f"{source}: {exc}") from None
        out[key] = text
    return out
