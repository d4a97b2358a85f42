"""The one settings object, read from the environment (prefix GIFTGRAPH_) in one place."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class ConfigurationError(RuntimeError):
    """The settings cannot run the service (e.g. production without a JWT secret)."""


HMAC_ALGORITHMS = ("HS256", "HS384", "HS512")
MIN_SECRET_BYTES = 32

DEFAULT_POINTS_PER_UNIT = {
    "USD": Decimal("100"),
    "CAD": Decimal("75"),
    "GBP": Decimal("125"),
    "EUR": Decimal("110"),
    "AUD": Decimal("65"),
}


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="GIFTGRAPH_", extra="ignore", frozen=True)

    env: Literal["development", "production"] = "development"
    host: str = "127.0.0.1"
    port: int = Field(8000, ge=0, le=65535)
    data_dir: Path = Path("data")
    log_level: str = "INFO"

    # Auth: HS256 by default; `jwt_secret` is required in production.
    jwt_secret: SecretStr | None = None
    jwt_algorithms: list[str] = ["HS256"]
    jwt_issuer: str | None = None
    jwt_audience: str | None = None
    jwt_leeway_seconds: int = Field(30, ge=0)
    dev_token_ttl_seconds: int = Field(86_400, gt=0)

    graphiql: bool | None = None  # default: on in development, off in production
    introspection: bool | None = None  # default: on in development, off in production

    provider: Literal["sandbox"] = "sandbox"
    sandbox_starting_balance: int = Field(10_000, ge=0)
    sandbox_fulfilment_delay: float = Field(2.0, ge=0)
    sandbox_latency: float = Field(0.0, ge=0)
    sandbox_failure_rate: float = Field(0.0, ge=0, le=1)

    # Face value -> points, per currency; redemption, pointCost and pointCostFor all use it.
    points_per_unit: dict[str, Decimal] = Field(default_factory=lambda: dict(DEFAULT_POINTS_PER_UNIT))

    catalog_stable_ttl: float = Field(3600.0, gt=0)  # names, descriptions, images
    catalog_volatile_ttl: float = Field(30.0, gt=0)  # availability
    catalog_max_stale: float = Field(86_400.0, ge=0)  # serve this old a catalog when the provider fails
    catalog_retry_after: float = Field(5.0, ge=0)  # after a failed refresh, serve stale this long before asking again
    catalog_page_size: int = Field(100, ge=1, le=100)

    idempotency_ttl_seconds: int = Field(86_400, ge=86_400)  # at least 24 h
    idempotency_wait_seconds: float = Field(5.0, ge=0)  # how long a racing retry waits for the original
    idempotency_lease_seconds: float = Field(60.0, gt=0)  # after this a crashed attempt may be taken over

    @field_validator("jwt_algorithms")
    @classmethod
    def _hmac_algorithms_only(cls, value: list[str]) -> list[str]:
        if not value or any(alg.lower() == "none" for alg in value):
            raise ValueError("jwt_algorithms must list real algorithms, never 'none'")
        # Tokens are verified with the shared secret: an asymmetric algorithm would need a public
        # key giftgraph does not take, and would invite HS/RS key confusion.
        unsupported = [alg for alg in value if alg not in HMAC_ALGORITHMS]
        if unsupported:
            raise ValueError(f"jwt_algorithms supports {', '.join(HMAC_ALGORITHMS)}; not {', '.join(unsupported)}")
        return value

    @field_validator("jwt_secret")
    @classmethod
    def _secret_not_blank(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and not value.get_secret_value().strip():
            raise ValueError("jwt_secret must not be blank; leave it unset in development to generate one")
        return value

    @field_validator("points_per_unit")
    @classmethod
    def _positive_rates(cls, value: dict[str, Decimal]) -> dict[str, Decimal]:
        if any(rate <= 0 for rate in value.values()):
            raise ValueError("points_per_unit rates must be positive")
        return {code.upper(): rate for code, rate in value.items()}

    @model_validator(mode="after")
    def _production_needs_secret(self) -> Settings:
        if self.env != "production":
            return self
        if self.jwt_secret is None:
            raise ValueError("GIFTGRAPH_JWT_SECRET is required when GIFTGRAPH_ENV=production")
        if len(self.jwt_secret.get_secret_value().encode()) < MIN_SECRET_BYTES:
            # RFC 7518 3.2: an HMAC key at least as long as the hash output.
            raise ValueError(f"GIFTGRAPH_JWT_SECRET must be at least {MIN_SECRET_BYTES} bytes in production")
        return self

    @property
    def is_production(self) -> bool:
        return self.env == "production"

    @property
    def graphiql_enabled(self) -> bool:
        return (not self.is_production) if self.graphiql is None else self.graphiql

    @property
    def introspection_enabled(self) -> bool:
        return (not self.is_production) if self.introspection is None else self.introspection

    @property
    def database_url(self) -> str:
        return f"sqlite+aiosqlite:///{self.data_dir / 'giftgraph.db'}"

    @property
    def sandbox_database_url(self) -> str:
        return f"sqlite+aiosqlite:///{self.data_dir / 'sandbox.db'}"


def load_settings(**overrides: object) -> Settings:
    """Settings from the environment; a readable ConfigurationError when they are invalid."""
    from pydantic import ValidationError

    try:
        return Settings(**overrides)  # type: ignore[arg-type]
    except ValidationError as exc:
        # Pydantic's own text repeats the input values, the JWT secret among them: list the
        # failures without them.
        problems = [
            f"{'.'.join(str(part) for part in error['loc']) or 'settings'}: {error['msg']}"
            for error in exc.errors(include_url=False, include_context=False, include_input=False)
        ]
        raise ConfigurationError("\n".join(problems)) from None
