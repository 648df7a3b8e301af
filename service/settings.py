"""How tables are built (DESIGN.md §10), read from LATENTGRAM_BUILD_* variables: the engine, its
memory and, for Spark, the master. `latentgram build`'s options override them; `prepare` and
the Compose services take them from the environment alone. (The service's own limits are
service/api/settings.py's.)"""

from __future__ import annotations

from typing import Any, Literal, TypeVar

from pydantic import Field, ValidationError, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from service.errors import InvalidInputError

BUILD_ENV_PREFIX = "LATENTGRAM_BUILD_"
BuildEngine = Literal["duckdb", "spark"]
S = TypeVar("S", bound=BaseSettings)


def settings_from_env(cls: type[S], prefix: str, what: str, overrides: dict[str, Any]) -> S:
    """`cls` read from the environment, with the options that are not None on top; a bad
    value is InvalidInputError naming where it came from (the option `--field`, or the
    variable `prefix` + FIELD) and what was wrong."""
    values = {k: v for k, v in overrides.items() if v is not None}

    def source(field: str) -> str:
        return f"--{field.replace('_', '-')}" if field in values else f"{prefix}{field.upper()}"

    try:
        return cls(**values)
    except ValidationError as exc:
        problems = "; ".join(f"{source(str(e['loc'][0]))}: {_message(e)}" for e in exc.errors())
        raise InvalidInputError(f"bad {what} settings: {problems}") from None


def _message(error: Any) -> str:
    """A validation error's message, without pydantic's "Value error, " before our own."""
    if error["type"] == "value_error":
        return str(error["ctx"]["error"])
    return str(error["msg"])


class BuildSettings(BaseSettings):
    """Build settings; each field can be set as LATENTGRAM_BUILD_<FIELD NAME IN CAPITALS>."""

    model_config = SettingsConfigDict(env_prefix=BUILD_ENV_PREFIX, env_ignore_empty=True)

    engine: BuildEngine = Field(
        "duckdb", description="duckdb (this machine, out of core) or spark (pyspark, any master)."
    )
    memory_limit: str | None = Field(
        None,
        description="DuckDB's memory limit for the build, e.g. 4GB (default: DuckDB's, 80% of"
        " RAM); the counts of the chunks are spilled to <run>/tmp and merged from there.",
    )
    spark_master: str = Field(
        "local[*]", description="Spark master: local[*], local[N], spark://HOST:PORT, yarn, k8s://…"
    )

    @field_validator("memory_limit")
    @classmethod
    def _size(cls, value: str | None) -> str | None:
        """Checked here, so that a bad one names its option or variable."""
        from service.ngram.build import parse_memory_limit  # numpy and duckdb: only when set

        try:
            return None if value is None else parse_memory_limit(value)
        except InvalidInputError as why:
            raise ValueError(str(why)) from None

    @classmethod
    def from_env(cls, **overrides: Any) -> BuildSettings:
        """Settings from the environment, then `overrides` (the CLI's options) on top."""
        return settings_from_env(cls, BUILD_ENV_PREFIX, "build", overrides)
