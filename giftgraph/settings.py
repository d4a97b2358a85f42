"""The one settings object, read from the environment (prefix GIFTGRAPH_) in one place."""

from __future__ import annotations

import importlib.util
import json
from decimal import Decimal
from pathlib import Path
from typing import Annotated, Literal
from urllib.parse import urlsplit

from pydantic import Field, SecretStr, ValidationInfo, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict


class ConfigurationError(RuntimeError):
    """The settings cannot run the service (e.g. production without a JWT secret)."""


HMAC_ALGORITHMS = ("HS256", "HS384", "HS512")
# With a JWKS URL: public-key algorithms only (RFC 7518), never HMAC.
JWKS_ALGORITHMS = ("RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512")
LOOPBACK_HOSTS = ("127.0.0.1", "::1", "localhost")
MIN_SECRET_BYTES = 32
SANDBOX_CREDENTIALS_FILE = "sandbox-credentials.json"

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
    # The gateway's own database (idempotency keys, webhook ids, the ledger, stored OAuth tokens): an async
    # SQLAlchemy URL, sqlite+aiosqlite or postgresql+asyncpg (pip install -e '.[postgres]'); none: SQLite
    # in data_dir. Replicas that share one work together (leases, claims, row locks).
    database_url: SecretStr | None = None  # may carry a password
    log_level: str = "INFO"

    # Auth: HS256 with `jwt_secret` by default, or RS256/ES256 with an identity provider's keys when
    # `jwt_jwks_url` is set; production needs one of the two.
    jwt_secret: SecretStr | None = None
    jwt_jwks_url: str | None = None  # declared before jwt_algorithms: its default depends on it
    jwt_algorithms: list[str] = Field(
        default_factory=lambda data: ["RS256", "ES256"] if data.get("jwt_jwks_url") else ["HS256"]
    )
    jwt_issuer: str | None = None
    jwt_audience: str | None = None
    jwt_leeway_seconds: int = Field(30, ge=0)
    dev_token_ttl_seconds: int = Field(86_400, gt=0)
    jwt_jwks_cache_seconds: float = Field(300.0, gt=0)  # keys are fetched again after this
    jwt_jwks_min_refresh_seconds: float = Field(60.0, ge=0)  # at most one JWKS fetch per this interval
    jwt_jwks_timeout_seconds: float = Field(5.0, gt=0)

    graphiql: bool | None = None  # default: on in development, off in production
    introspection: bool | None = None  # default: on in development, off in production
    field_suggestions: bool | None = None  # "Did you mean ...?" hints; default: on in development only

    # "sandbox": the embedded sandbox, in process (the one-command start). "rest": a provider speaking the
    # sandbox's REST contract (providers/sandbox/openapi.json) at `provider_base_url`, e.g. `giftgraph sandbox serve`.
    # "tremendous" / "tango": giftgraph's own points ledger (in the gateway database) with that provider
    # fulfilling the orders (issue #4).
    provider: Literal["sandbox", "rest", "tremendous", "tango"] = "sandbox"
    sandbox_starting_balance: int = Field(10_000, ge=0, le=2**31 - 1)  # GraphQL Int
    sandbox_fulfilment_delay: float = Field(2.0, ge=0)
    sandbox_latency: float = Field(0.0, ge=0)
    sandbox_failure_rate: float = Field(0.0, ge=0, le=1)

    # The REST provider (provider=rest): where it is, how to authenticate, and how hard to try.
    provider_base_url: str | None = None
    provider_auth: Literal["api_key", "oauth2"] = "api_key"
    provider_api_key: str | None = None  # api_key: HTTP Basic, key and secret
    provider_api_secret: SecretStr | None = None
    provider_client_id: str | None = None  # oauth2: client credentials grant
    provider_client_secret: SecretStr | None = None
    provider_token_url: str | None = None  # default: {provider_base_url}/oauth/token
    provider_token_refresh_margin_seconds: float = Field(30.0, ge=0)  # refresh a token this long before it expires
    provider_connect_timeout: float = Field(2.0, gt=0)
    provider_read_timeout: float = Field(5.0, gt=0)
    provider_write_timeout: float = Field(5.0, gt=0)
    provider_pool_timeout: float = Field(2.0, gt=0)  # waiting for a free connection
    provider_max_connections: int = Field(50, ge=1)
    provider_max_keepalive_connections: int = Field(20, ge=0)
    # aiohttp: httpx-aiohttp's transport behind the same httpx API; at 50 concurrent calls its p50 was about a
    # fifth of httpx's own pool's in bench/bench_network.py, so it is the default.
    provider_transport: Literal["httpx", "aiohttp"] = "aiohttp"
    provider_rate_limit_per_second: float = Field(20.0, ge=0)  # client-side limiter; 0: off
    provider_retry_attempts: int = Field(4, ge=1)  # attempts per call, the first included
    provider_retry_base_delay: float = Field(0.1, ge=0)  # full jitter: sleep uniform(0, min(max, base * 2**n))
    provider_retry_max_delay: float = Field(2.0, ge=0)
    provider_retry_after_cap: float = Field(10.0, ge=0)  # a provider's Retry-After is honoured up to this
    provider_call_budget_seconds: float = Field(10.0, gt=0)  # one call, all attempts and sleeps included
    provider_retry_budget_ratio: float = Field(0.2, ge=0)  # retries at most this share of calls...
    provider_retry_budget_min_per_second: float = Field(2.0, ge=0)  # ...plus this floor
    provider_breaker_failure_threshold: int = Field(5, ge=1)  # consecutive failures that open the circuit
    provider_breaker_cooldown_seconds: float = Field(10.0, gt=0)  # fail fast this long, then let one probe through

    # The points ledger (provider=tremendous|tango): points come from the loyalty system's signed
    # `points.earned` webhooks (POST /webhooks/loyalty) and `giftgraph points grant`.
    ledger_starting_balance: int = Field(0, ge=0, le=2**31 - 1)  # points a user seen for the first time gets (0: none)
    loyalty_webhook_secrets: list[SecretStr] = []  # Standard Webhooks secrets of the loyalty system
    # Fernet keys (urlsafe base64 of 32 bytes) for gift cards at rest; the first encrypts, all decrypt
    # (rotation). Unset in development: generated once into data_dir/card-keys.json (0600).
    card_encryption_keys: list[SecretStr] = []
    funding_balance_ttl_seconds: float = Field(30.0, ge=0)  # how long a provider's funding balance is trusted

    # Tremendous (REST v2): Bearer API key; testflight is its sandbox.
    tremendous_base_url: str = "https://testflight.tremendous.com/api/v2"
    tremendous_api_key: SecretStr | None = None
    tremendous_funding_source_id: str = "balance"
    # The webhook's private keys (HMAC-SHA256 of the body), several while rotating; the singular setting is the
    # older spelling of one more key.
    tremendous_webhook_secrets: list[SecretStr] = []
    tremendous_webhook_secret: SecretStr | None = None
    # 90% of Tremendous' 10 requests/s: at exactly the limit, transit jitter bunches requests into 429s.
    tremendous_rate_limit_per_second: float = Field(9.0, ge=0)
    # The catalog's filters (GET /products?country=&currency=): ISO country codes (none: every country) and the
    # currencies rewards are priced in, the first preferred when a product sells in several.
    tremendous_countries: list[str] = []
    tremendous_currencies: list[str] = ["USD"]

    # Tango Card RaaS v2: HTTP Basic (platform name and key) or OAuth2 client credentials.
    tango_base_url: str = "https://integration-api.tangocard.com/raas/v2"
    tango_auth: Literal["basic", "oauth2"] = "basic"
    tango_platform_name: str | None = None
    tango_platform_key: SecretStr | None = None
    tango_client_id: str | None = None
    tango_client_secret: SecretStr | None = None
    tango_token_url: str | None = None
    # The token endpoint's `audience` (required with oauth2); the token is kept encrypted in the gateway database.
    tango_oauth_audience: str | None = None
    tango_account_identifier: str | None = None
    tango_customer_identifier: str | None = None
    # Base64 shared secrets (HMAC-SHA256), several while rotating; the singular setting is the older spelling.
    tango_webhook_secrets: list[SecretStr] = []
    tango_webhook_secret: SecretStr | None = None
    tango_rate_limit_per_second: float = Field(0.9, ge=0)  # 90% of Tango's 1 request/s, for the same reason
    # Tango asks for at most about two catalog fetches a day; an ItemAvailability webhook drops the cache sooner.
    tango_catalog_ttl_seconds: float = Field(43_200.0, ge=0)

    # Redemptions whose outcome the provider left unknown stay PENDING; the reconciler settles them.
    reconcile_interval_seconds: float = Field(2.0, gt=0)
    reconcile_max_backoff_seconds: float = Field(60.0, gt=0)

    # Webhooks from the provider (POST /webhooks/{provider}): Standard Webhooks secrets (whsec_...), several
    # while rotating; a timestamp further than the tolerance from now is refused.
    webhook_secrets: list[SecretStr] = []
    webhook_tolerance_seconds: int = Field(300, ge=1)

    # `giftgraph sandbox serve`: the sandbox as a REST service. Unset credentials are generated once in
    # development (data_dir/sandbox-credentials.json) and shared with a gateway started from the same folder.
    sandbox_url: str = "http://127.0.0.1:9000"  # where `giftgraph sandbox grant` finds the service
    sandbox_api_key: str | None = None
    sandbox_api_secret: SecretStr | None = None
    sandbox_client_id: str | None = None
    sandbox_client_secret: SecretStr | None = None
    sandbox_token_ttl_seconds: int = Field(3600, ge=1)
    sandbox_rate_limit: str = "50/second"  # per credential, in the `limits` notation; 429 with Retry-After beyond
    sandbox_webhook_url: str | None = None  # e.g. http://127.0.0.1:8000/webhooks/sandbox
    sandbox_webhook_secret: SecretStr | None = None
    # Start-time faults: {"<operation or *>": {"<fault kind>": share of its calls}}, drawn from a random source
    # seeded with sandbox_fault_seed; off, the service injects no fault at all (X-Sandbox-Fault is ignored).
    sandbox_faults: Annotated[dict[str, dict[str, float]], NoDecode] = Field(default_factory=dict)
    sandbox_fault_seed: int | None = None
    sandbox_fault_injection: bool = True

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

    # Persisted queries: "apq" (Apollo's automatic persisted queries), "safelist" (only the manifest's
    # operations run) or "off".
    persisted_queries: Literal["off", "apq", "safelist"] = "apq"
    persisted_queries_manifest: Path = Path("graphql/persisted-operations.json")
    persisted_queries_cache_chars: int = Field(2_000_000, gt=0)  # APQ cache size, in characters of query text
    persisted_queries_max_age: int = Field(30, ge=0)  # Cache-Control max-age of anonymous GETs by hash; 0: none

    # Browsers: a POST a page could send without a preflight needs one of these headers (CSRF prevention);
    # origins whose pages may call the API (CORS; none by default).
    csrf_headers: list[str] = ["X-GraphQL-CSRF", "Apollo-Require-Preflight"]
    cors_origins: list[str] = []

    # Query limits and budgets (schema/limits.py, giftgraph/ratelimit.py). The static limits are checked
    # before an operation runs (0 turns one off); the budget is charged by query cost, per user (per client
    # address when anonymous), and refills as a moving window: at most `rate_limit_points` in any
    # `rate_limit_window_seconds`. Redeem attempts (each `redeem` field, aliases included) have a budget of
    # their own. `protections_enabled=false` drops all of it, the operation timeout too (benchmarks only).
    protections_enabled: bool = True
    max_query_cost: int = Field(1000, ge=0)
    max_query_depth: int = Field(10, ge=0)
    max_query_aliases: int = Field(30, ge=0)
    max_query_tokens: int = Field(2000, ge=0)
    max_document_bytes: int = Field(16_384, ge=0)
    rate_limit_points: int = Field(50_000, gt=0)
    rate_limit_window_seconds: int = Field(20, gt=0)
    redeem_attempts_limit: int = Field(120, gt=0)
    redeem_attempts_window_seconds: int = Field(60, gt=0)
    rate_limit_storage_url: str = "async+memory://"  # or async+redis://host:6379 to share budgets between instances
    operation_timeout_seconds: float = Field(30.0, ge=0)

    @field_validator("jwt_algorithms")
    @classmethod
    def _algorithms_of_one_family(cls, value: list[str], info: ValidationInfo) -> list[str]:
        if not value or any(alg.lower() == "none" for alg in value):
            raise ValueError("jwt_algorithms must list real algorithms, never 'none'")
        # One family per mode, so no token can pick how it is checked (HS/RS key confusion): the
        # shared secret verifies HMAC only, the JWKS's public keys RSA/EC only.
        jwks = bool(info.data.get("jwt_jwks_url"))
        allowed = JWKS_ALGORITHMS if jwks else HMAC_ALGORITHMS
        unsupported = [alg for alg in value if alg not in allowed]
        if unsupported:
            hint = "" if jwks else " (RSA and EC algorithms need GIFTGRAPH_JWT_JWKS_URL)"
            raise ValueError(f"jwt_algorithms supports {', '.join(allowed)}; not {', '.join(unsupported)}{hint}")
        return value

    @field_validator("database_url")
    @classmethod
    def _supported_database(cls, value: SecretStr | None) -> SecretStr | None:
        if value is None:
            return None
        url = value.get_secret_value()
        if not url.startswith(("sqlite+aiosqlite://", "postgresql+asyncpg://")):
            raise ValueError("database_url must be a sqlite+aiosqlite:// or postgresql+asyncpg:// URL")
        from sqlalchemy.engine import make_url  # only when set

        # Parsed here so that a bad one fails with this message, never with the parser's (which quotes the
        # text after an unescaped '@' or ':', i.e. part of the password).
        try:
            parsed = make_url(url)
            parsed.port  # noqa: B018  (a port that is not a number raises here)
        except Exception:  # noqa: BLE001
            raise ValueError(
                "database_url is not a valid URL; percent-encode '@', ':' and '/' in the password"
            ) from None
        if parsed.host is not None and "@" in parsed.host:
            raise ValueError("database_url is not a valid URL; percent-encode '@', ':' and '/' in the password")
        if url.startswith("postgresql+asyncpg://") and importlib.util.find_spec("asyncpg") is None:
            raise ValueError("database_url names PostgreSQL: install the driver (pip install -e '.[postgres]')")
        return value

    @field_validator("jwt_jwks_url")
    @classmethod
    def _jwks_url_is_http(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith(("https://", "http://")):
            raise ValueError("jwt_jwks_url must be an https:// URL")
        return value

    @field_validator("jwt_secret")
    @classmethod
    def _secret_not_blank(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and not value.get_secret_value().strip():
            raise ValueError("jwt_secret must not be blank; leave it unset in development to generate one")
        return value

    @field_validator("cors_origins")
    @classmethod
    def _origins_without_paths(cls, value: list[str]) -> list[str]:
        # Browsers send `Origin: https://host[:port]`: a trailing slash would never match.
        origins = [origin.strip().rstrip("/") for origin in value]
        if any(not origin or (origin != "*" and "://" not in origin) for origin in origins):
            raise ValueError("cors_origins must be origins like https://app.example.com (or *)")
        return origins

    @field_validator("sandbox_faults", mode="before")
    @classmethod
    def _sandbox_faults(cls, value: object) -> object:
        # Decoded here rather than by pydantic-settings: bad JSON is then a settings error naming the variable.
        if isinstance(value, str):
            try:
                value = json.loads(value) if value.strip() else {}
            except ValueError:
                raise ValueError("GIFTGRAPH_SANDBOX_FAULTS must be a JSON object") from None
        if value == {}:
            return value
        from providers.sandbox.config import check_fault_rates  # only when set: it loads the sandbox package

        try:
            return check_fault_rates(value)  # type: ignore[arg-type]
        except ValueError as exc:
            raise ValueError(f"GIFTGRAPH_SANDBOX_FAULTS: {exc}") from None

    @field_validator("tremendous_countries", "tremendous_currencies")
    @classmethod
    def _iso_codes(cls, value: list[str], info: ValidationInfo) -> list[str]:
        # ISO 3166 alpha-2 countries, ISO 4217 currencies: a typo would silently empty the catalog.
        length = 2 if info.field_name == "tremendous_countries" else 3
        codes = [code.strip().upper() for code in value]
        if any(len(code) != length or not code.isascii() or not code.isalpha() for code in codes):
            raise ValueError(f"{info.field_name} must list {length}-letter ISO codes")
        return codes

    @field_validator("points_per_unit")
    @classmethod
    def _positive_rates(cls, value: dict[str, Decimal]) -> dict[str, Decimal]:
        if any(rate <= 0 for rate in value.values()):
            raise ValueError("points_per_unit rates must be positive")
        return {code.upper(): rate for code, rate in value.items()}

    @model_validator(mode="after")
    def _limits_are_usable(self) -> Settings:
        # An operation under max_query_cost that no budget could ever pay for would be refused forever.
        if self.max_query_cost and self.max_query_cost > self.rate_limit_points:
            raise ValueError("max_query_cost must not exceed rate_limit_points")
        if not self.rate_limit_storage_url.startswith("async+"):
            raise ValueError("rate_limit_storage_url must name an async storage: async+memory:// or async+redis://...")
        return self

    @model_validator(mode="after")
    def _rest_provider_is_reachable(self) -> Settings:
        for name in ("provider_base_url", "provider_token_url", "sandbox_url", "sandbox_webhook_url"):
            value = getattr(self, name)
            if value is not None and not value.startswith(("https://", "http://")):
                raise ValueError(f"{name} must be an http:// or https:// URL")
        if self.provider == "rest" and not self.provider_base_url:
            raise ValueError("GIFTGRAPH_PROVIDER_BASE_URL is required when GIFTGRAPH_PROVIDER=rest")
        if self.provider_retry_base_delay > self.provider_retry_max_delay:
            raise ValueError("provider_retry_base_delay must not exceed provider_retry_max_delay")
        if self.provider_max_keepalive_connections > self.provider_max_connections:
            raise ValueError("provider_max_keepalive_connections must not exceed provider_max_connections")
        return self

    @model_validator(mode="after")
    def _shared_database_needs_shared_keys(self) -> Settings:
        # Cards and stored OAuth tokens in the ledger are sealed with the card keys: replicas sharing a database
        # with keys generated per data folder could not read each other's (and Tango would be asked again).
        if self.database_url is not None and self.provider in ("tremendous", "tango") and not self.card_encryption_keys:
            raise ValueError(
                "GIFTGRAPH_CARD_ENCRYPTION_KEYS is required with GIFTGRAPH_DATABASE_URL "
                "(the same keys on every replica)"
            )
        return self

    @model_validator(mode="after")
    def _jwks_needs_issuer_and_audience(self) -> Settings:
        # An identity provider signs tokens for many services: only `iss` and `aud` say one is for us.
        if self.jwt_jwks_url and not (self.jwt_issuer and self.jwt_audience):
            raise ValueError("GIFTGRAPH_JWT_ISSUER and GIFTGRAPH_JWT_AUDIENCE are required with GIFTGRAPH_JWT_JWKS_URL")
        return self

    @model_validator(mode="after")
    def _production_needs_secret(self) -> Settings:
        if self.env != "production":
            return self
        if self.jwt_jwks_url:
            # Keys fetched over plain HTTP could be swapped on the way; a sidecar on loopback is fine.
            host = urlsplit(self.jwt_jwks_url).hostname
            if self.jwt_jwks_url.startswith("http://") and host not in LOOPBACK_HOSTS:
                raise ValueError("GIFTGRAPH_JWT_JWKS_URL must use https:// in production (or a loopback address)")
            return self
        if self.jwt_secret is None:
            raise ValueError(
                "GIFTGRAPH_JWT_SECRET is required when GIFTGRAPH_ENV=production (or GIFTGRAPH_JWT_JWKS_URL)"
            )
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
    def field_suggestions_enabled(self) -> bool:
        return (not self.is_production) if self.field_suggestions is None else self.field_suggestions

    @property
    def gateway_database_url(self) -> str:
        if self.database_url is not None:
            return self.database_url.get_secret_value()
        return f"sqlite+aiosqlite:///{self.data_dir / 'giftgraph.db'}"

    @property
    def sandbox_credentials_path(self) -> Path:
        """The development credentials `giftgraph sandbox serve` generates and a local gateway reads."""
        return self.data_dir / SANDBOX_CREDENTIALS_FILE

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
