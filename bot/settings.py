"""Configuration: a TOML file plus ``DISPATCHBOT_*`` environment variables.

Environment wins over the file; nested keys use ``__`` (``DISPATCHBOT_LIMITS__MEMORY=4g``).
The file is ``config/dispatchbot.toml`` unless ``DISPATCHBOT_CONFIG`` names another one.
Secrets are ``SecretStr`` so they never print by accident.
"""

from __future__ import annotations

import hashlib
import ipaddress
import os
import socket
from pathlib import Path
from urllib.parse import unquote, urlsplit
from typing import Literal

from pydantic import AliasChoices, BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from bot.logs import MIN_SECRET_LENGTH

ENV_PREFIX = "DISPATCHBOT_"
DEFAULT_CONFIG = Path("config/dispatchbot.toml")
# What a harvest examines at most, whatever the agent committed: past either, the run fails.
MAX_HARVEST_FILES = 10_000
MAX_HARVEST_BYTES = 256 * 1024 * 1024


class Limits(BaseModel):
    """Hard limits for every agent container."""

    memory: str = "4g"
    cpus: float = 2.0
    pids: int = 1024
    timeout: float = 3600.0
    grace: float = 10.0
    log_bytes: int = 2 * 1024 * 1024
    disk: str = "10g"  # what a run's workspace and its container's own file system may hold together
    disk_reserve: str = "2g"  # free space a run may not write into, kept for the store and the webhook
    cap_add: list[str] = []
    user: str = "1000:1000"


class Pool(BaseModel):
    """A concurrency pool; each agent counts against the pool of its name unless it says otherwise."""

    limit: int = 2
    spawn_interval: float = 0.0
    frozen: bool = False


class Backoff(BaseModel):
    """Rate-limit backoff: ``failures`` quick failures (each within ``window`` s of its start) pause a pool."""

    failures: int = 3
    window: float = 60.0
    pause: float = 1800.0


class CustomAgent(BaseModel):
    """An agent defined in config: ``argv`` may hold ``{prompt}`` and ``{model}`` placeholders."""

    image: str | None = None
    argv: list[str]
    model: str = ""
    env: list[str] = []
    credentials: list[str] = []
    pool: str | None = None
    review: bool = False
    # Unset: what is known of the CLI named by argv[0] (``bot.runs.agents.CLIS``), if anything.
    cli_endpoint: str = ""  # where the CLI sends its requests by default, shown by ``doctor``
    install: str = ""  # how to get the CLI into an image that lacks it, in the preflight's refusal
    prints_final_message: bool | None = None  # its stdout ends with its final message: the run's summary
    # Its model API, for the gateway: the vendor whose API and key header its ``env`` keys are for
    # (unset: by the key's name, ANTHROPIC_API_KEY and so on), and the variable its CLI takes a base
    # URL from. With one, the CLI gets the gateway's URL and a run token for each key; without one,
    # its keys are inside its container, which reaches only the vendor's hosts (and says so).
    vendor: Literal["", "anthropic", "openai", "gemini"] = ""
    base_url_env: str = ""

    @field_validator("env")
    @classmethod
    def _not_the_bots_own(cls, names: list[str]) -> list[str]:
        """The bot's own settings hold its secrets (the Forge token above all): never an agent's."""
        own = [name for name in names if name.upper().startswith(ENV_PREFIX)]
        if own:
            raise ValueError(f"{', '.join(own)}: the bot's own settings never reach an agent's container")
        return names


class Labels(BaseModel):
    """Names of the state labels the bot puts on issues and pull requests."""

    queued: str = "dispatch/queued"
    running: str = "dispatch/running"
    blocked: str = "dispatch/blocked"
    completed: str = "dispatch/done"
    failed: str = "dispatch/failed"
    cancelled: str = "dispatch/cancelled"


class Sweep(BaseModel):
    """How long the workspace of a finished run is kept, per outcome, in seconds."""

    completed: float = 86400.0
    failed: float = 3 * 86400.0
    cancelled: float = 86400.0
    blocked: float = 14 * 86400.0


class Schedule(BaseModel):
    """Intervals in seconds: each worker's resync period (``drain``: the runner and the reporter look
    again even when nothing woke them), their slower passes (``reconcile``: the runner re-adopts runs
    nobody supervises, the reporter removes stray stopwatches) and the sweeper's jobs."""

    drain: float = 30.0
    sweep: float = 3600.0
    reap: float = 300.0
    reconcile: float = 300.0
    redeliver: float = 60.0
    retention: float = 3600.0


class Retention(BaseModel):
    """How long the store keeps what it no longer needs, in seconds.

    A handled delivery's body is only kept for looking into a problem; its id must outlive every
    redelivery the Forge may still send (Gitea keeps hook history for days), since it is what
    answers a redelivery with "already received". Trigger keys and finished outbox items, which
    keep the effects of one delivery from happening twice, go with the ids.
    """

    bodies: float = 86400.0
    deliveries: float = 30 * 86400.0


class Replica(BaseModel):
    """This bot process among several sharing one PostgreSQL store (with SQLite, the only one).

    ``id``: its name in the store, which owns the runs it claims (unset: the host name and a hash
    of ``data_dir``, the same across restarts). ``max_running``: runs at once on this machine, on top
    of the cluster-wide ``max_running`` and pool limits (unset: no own cap). It heartbeats every
    ``heartbeat`` seconds; silent for ``ttl`` seconds, the others give up on it and on its runs.
    """

    id: str = ""
    max_running: int | None = None
    ttl: float = 300.0
    heartbeat: float = 10.0

    @model_validator(mode="after")
    def _beats_within_ttl(self) -> Replica:
        if self.ttl < 3 * self.heartbeat:
            raise ValueError(f"replica.ttl ({self.ttl} s) must be at least 3 heartbeats ({self.heartbeat} s each)")
        return self


# The public package registries a run may reach through the gateway's proxy (npm, PyPI, Go modules,
# crates, Debian); ``host`` allows ports 80 and 443, ``host:port`` that port, ``.domain`` its subdomains.
REGISTRIES = [
    "registry.npmjs.org", "registry.yarnpkg.com", "pypi.org", "files.pythonhosted.org",
    "proxy.golang.org", "sum.golang.org", "index.crates.io", "static.crates.io", "crates.io",
    "deb.debian.org", "security.debian.org",
]


class Gateway(BaseModel):
    """The model gateway and proxy, on the host address of the bot's own Docker network.

    ``port``/``proxy_port`` 0 pick free ports. ``network``: that network's name (one per bot data
    dir unless given). Sizes bound one model call's request and answer; ``read_timeout`` is the
    longest silence of an upstream mid-answer (a long call streams, so it does not time out early).
    ``warm``: network namespaces on the closed network kept started ahead of the runs' containers
    (see ``bot.gateway.holders``); 0 has each container join the network at its own start.

    What a hostile agent may hold of the bot's process through the gateway, each file descriptor
    and byte of it shared with every other repository's Forge, store and Docker calls:
    ``connections`` open on its two listeners at once, all runs together (a tunnel holds two
    descriptors: keep the bot's ``ulimit -n`` well above twice it); past it, the connection that
    has waited longest for a request head is dropped for a new one (a real client sends its head
    at once), or the new one is closed when none is waiting. ``run_connections`` of one run's past
    their heads (its agent's and QA's: tunnels, model calls in flight or waiting); one more gets 429.
    ``head_timeout``: how long a connection may take to send a head (also between the calls of a
    kept-alive one); ``tunnel_idle_timeout``: how long a tunnel may pass no byte either way.
    ``run_model_calls``: one run's model calls in flight at once; more wait, their bodies unread
    (in the kernel's buffers, not the bot's memory), rather than being refused, which the CLIs
    retry badly; so a run holds at most this many request bodies.
    """

    port: int = 8081
    proxy_port: int = 8082
    network: str | None = None
    allow: list[str] = REGISTRIES
    max_request_bytes: int = 32 * 1024 * 1024
    max_answer_bytes: int = 256 * 1024 * 1024
    connect_timeout: float = 10.0
    read_timeout: float = 600.0
    warm: int = Field(1, ge=0)
    connections: int = Field(512, ge=1)
    run_connections: int = Field(64, ge=1)
    head_timeout: float = Field(10.0, gt=0)
    tunnel_idle_timeout: float = Field(300.0, gt=0)
    run_model_calls: int = Field(8, ge=1)

    model_config = ConfigDict(extra="forbid")  # a misspelt cap is an error, never no cap


class Price(BaseModel):
    """What a model costs, in USD per million tokens: prompt tokens read fresh, those read from the
    vendor's cache, and output tokens (reasoning included)."""

    model_config = ConfigDict(extra="forbid")  # a misspelt price or cap is an error, never no cap

    input: float = Field(ge=0)
    output: float = Field(ge=0)
    cached: float = Field(ge=0)


class Budget(BaseModel):
    """Caps; unset means none. Per run: its cost, its tokens (input and output) and its model calls.
    ``daily_usd``: what each repository (top level) or a pool (``pools``) may spend per UTC day."""

    model_config = ConfigDict(extra="forbid")  # a misspelt price or cap is an error, never no cap

    run_usd: float | None = Field(None, gt=0)
    run_tokens: int | None = Field(None, gt=0)
    run_calls: int | None = Field(None, gt=0)
    daily_usd: float | None = Field(None, gt=0)


class Budgets(Budget):
    """The top-level caps, and overrides: a run's caps are its agent's, else its pool's, else these,
    each cap on its own. The top level's ``daily_usd`` holds for each repository; a pool's daily cap
    is set in ``pools`` only (an agent's ``daily_usd`` means nothing)."""

    agents: dict[str, Budget] = {}
    pools: dict[str, Budget] = {}

    def for_run(self, agent: str, pool: str) -> Budget:
        """The per-run caps of a run of ``agent`` in ``pool`` (``daily_usd`` is not among them)."""
        layers = (self.agents.get(agent), self.pools.get(pool), self)
        caps = {name: next((getattr(b, name) for b in layers if b and getattr(b, name) is not None), None)
                for name in ("run_usd", "run_tokens", "run_calls")}
        return Budget(**caps)

    def daily_for_pool(self, pool: str) -> float | None:
        override = self.pools.get(pool)
        return override.daily_usd if override else None


class GitIdentity(BaseModel):
    name: str = "dispatchbot"
    email: str = "dispatchbot@localhost"

    def env(self) -> dict[str, str]:
        """The environment that makes git author and commit as this identity (the agent's container, the harvest)."""
        return {
            f"GIT_{who}_{what}": value
            for who in ("AUTHOR", "COMMITTER")
            for what, value in (("NAME", self.name), ("EMAIL", self.email))
        }


class Settings(BaseSettings):
    """Every setting of the bot. See the README for each one's meaning."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        env_nested_delimiter="__",
        extra="forbid",
        populate_by_name=True,
    )

    forge_url: str | None = None
    # http:// sends the token in clear and lets the network forge permission answers: only to a
    # Forge on this host's loopback, unless the operator says so.
    allow_insecure_forge: bool = False
    forge_token: SecretStr | None = None
    webhook_secret: SecretStr | None = None
    bot_login: str | None = None

    # The dashboard (GET /) opens with the admin token or this read-only one; without either it is off.
    read_token: SecretStr | None = None
    # /metrics answers without a token (Prometheus' usual setup); false: it wants one of the two tokens.
    metrics_public: bool = True

    host: str = "0.0.0.0"
    port: int = Field(8080, validation_alias=AliasChoices("DISPATCHBOT_PORT", "PORT", "port"))
    data_dir: Path = Path("data")
    # Where the store is: unset, a SQLite file in data_dir (one bot); a postgresql:// URL, one
    # PostgreSQL database that several bot replicas share. A secret: the URL may hold a password.
    store_url: SecretStr | None = None
    max_body_bytes: int = 5 * 1024 * 1024
    # A webhook body must have arrived within ``body_timeout`` seconds (else 408), and at most
    # ``max_arriving_bodies`` are waited for at once (one more gets 503): without either, senders that
    # stall mid-body hold up to max_body_bytes each for as long as they like, and the bot runs out of
    # memory. Real deliveries (~20 kB) arrive in milliseconds, and one already complete takes no slot.
    body_timeout: float = Field(10.0, gt=0)
    max_arriving_bodies: int = Field(32, ge=1)
    forge_timeout: float = 15.0

    label_prefix: str = "dispatch:"
    review_agent: str = "codex:review"
    allowed_users: list[str] = []

    docker_url: str | None = None
    image: str = Field(
        "dispatchbot-agent:latest",
        validation_alias=AliasChoices("DISPATCHBOT_IMAGE", "AGENT_DOCKER_IMAGE", "image"),
    )
    limits: Limits = Limits()
    max_running: int = 4
    frozen: bool = False
    pools: dict[str, Pool] = {}
    backoff: Backoff = Backoff()
    agents: dict[str, CustomAgent] = {}
    default_models: dict[str, str] = {"local": "devstral-24b"}
    credentials: dict[str, list[str]] = {}
    git: GitIdentity = GitIdentity()

    # Where the agents' models are. ``base_urls``: per agent, the root URL of its model API when it
    # is not the vendor's (a self-hosted model or a proxy, without ``/v1``); ``local`` talks to the
    # ollama at ``ollama_url``. ``container_network``: the Docker network of agent containers
    # (None: Docker's default bridge; "host" lets them reach servers on the host's 127.0.0.1).
    base_urls: dict[str, str] = {}
    ollama_url: str = "http://127.0.0.1:11434"
    container_network: str | None = None

    # "gateway": agent and QA containers reach the gateway and nothing else (their model through it,
    # the allowlisted hosts through its proxy); "open": they sit on ``container_network`` with the
    # network as it is. Keys never enter a container in either mode.
    egress: Literal["gateway", "open"] = "gateway"
    egress_allow: dict[str, list[str]] = {}  # "owner/repo" -> more hosts for its runs
    gateway: Gateway = Gateway()

    qa: dict[str, list[list[str]]] = {}
    # What CI runs with the repository's secrets once the bot pushes: workflows, local actions and the
    # CI files of Woodpecker, Drone, Jenkins, GitLab. A directory ends in "/", "*" is a wildcard.
    protected_paths: list[str] = [
        ".forgejo/workflows/", ".gitea/workflows/", ".github/workflows/",
        ".forgejo/actions/", ".gitea/actions/", ".github/actions/",
        ".woodpecker*", ".drone.yml", "Jenkinsfile", ".gitlab-ci.yml",
    ]
    max_file_bytes: int = 1024 * 1024
    max_harvest_files: int = MAX_HARVEST_FILES  # (path, blob) pairs the agent's commits add
    max_harvest_bytes: int = MAX_HARVEST_BYTES  # of its git objects taken in, and of the files read
    template_vars: dict[str, str] = {}
    templates_dir: Path | None = None

    # What model calls cost and may cost (see ``Price`` and ``Budgets``), and how often a working
    # run's status comment shows its progress (seconds, at most).
    prices: dict[str, Price] = {}
    budgets: Budgets = Budgets()
    progress_interval: float = Field(20.0, gt=0)

    labels: Labels = Labels()
    sweep: Sweep = Sweep()
    schedule: Schedule = Schedule()
    retention: Retention = Retention()
    replica: Replica = Replica()

    # The operator's side: the admin API at /api/ and MCP at /mcp are off without a token;
    # `api_url` is where the CLI client and `dispatchbot mcp` find the bot (default: this host's port).
    admin_token: SecretStr | None = None
    api_url: str | None = None

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        path = Path(os.environ.get(ENV_PREFIX + "CONFIG", DEFAULT_CONFIG))
        toml = TomlConfigSettingsSource(settings_cls, toml_file=path)
        return init_settings, env_settings, toml

    @property
    def instance(self) -> str:
        """Tells this bot's containers from those of another bot on the same Docker engine."""
        return hashlib.sha256(str(self.data_dir.resolve()).encode()).hexdigest()[:10]

    @property
    def replica_id(self) -> str:
        """This replica's name in the store: as configured, else stable for this host and data_dir."""
        return self.replica.id or f"{socket.gethostname()}-{self.instance[:6]}"

    @property
    def database(self) -> Path:
        return self.data_dir / "dispatchbot.sqlite3"

    @property
    def store_location(self) -> str | Path:
        """What ``bot.store.open_store`` opens."""
        return self.store_url.get_secret_value() if self.store_url else self.database

    @field_validator("store_url")
    @classmethod
    def _postgres_only(cls, url: SecretStr | None) -> SecretStr | None:
        if url is not None and not url.get_secret_value().startswith(("postgresql://", "postgres://")):
            raise ValueError("store_url must be a postgresql:// URL (leave it unset for the SQLite file in data_dir)")
        return url

    def pool_of(self, name: str) -> Pool:
        return self.pools.get(name, Pool())

    def missing_for_serve(self) -> list[str]:
        """One line per setting the web process cannot run without, or not as it is given."""
        lines = [
            f"missing setting {name}: set {ENV_PREFIX}{name.upper()} or `{name}` in the config file"
            for name in ("forge_url", "forge_token", "webhook_secret")
            if not getattr(self, name)
        ]
        if self.forge_url and not self.allow_insecure_forge and not _secure_forge(self.forge_url):
            lines.append(
                f"setting {ENV_PREFIX}FORGE_URL (`forge_url`) is http:// to another host, which sends the token in"
                f" clear: use https://, or set allow_insecure_forge = true ({ENV_PREFIX}ALLOW_INSECURE_FORGE)"
            )
        for name in ("webhook_secret", "admin_token", "read_token"):  # empty: missing, or (tokens) off
            value: SecretStr | None = getattr(self, name)
            secret = value.get_secret_value() if value else ""
            if 0 < len(secret) < MIN_SECRET_LENGTH:
                lines.append(
                    f"setting {ENV_PREFIX}{name.upper()} (`{name}`) is too short to mask in logs safely:"
                    f" use at least {MIN_SECRET_LENGTH} characters"
                )
        return lines

    def exposures(self) -> list[str]:
        """Settings that let an agent reach what it should not, one warning each (start-up, doctor)."""
        found = []
        if self.docker_url and urlsplit(self.docker_url).scheme in ("tcp", "http", "https"):
            found.append(
                f"docker_url {self.docker_url} is a TCP address: agent containers may reach the Docker engine"
                " through it, and whoever reaches the engine owns the host"
            )
        if self.container_network == "host":
            found.append(
                'container_network = "host": agent containers share the host\'s network, and reach every'
                " service listening on it (this bot's port and the Docker engine's TCP port included)"
            )
        return found

    def secrets(self) -> list[str]:
        """Every secret value, for masking anything quoted back to users or logs."""
        values = [
            s.get_secret_value()
            for s in (self.forge_token, self.webhook_secret, self.admin_token, self.read_token)
            if s
        ]
        if self.store_url and (password := urlsplit(self.store_url.get_secret_value()).password):
            values.append(unquote(password))
        values += [v for k, v in os.environ.items() if k.endswith(("_API_KEY", "_TOKEN")) and len(v) >= 8]
        return values


def _secure_forge(url: str) -> bool:
    """https://, or http:// to this host's loopback."""
    parts = urlsplit(url)
    if parts.scheme != "http":
        return True
    host = parts.hostname or ""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
