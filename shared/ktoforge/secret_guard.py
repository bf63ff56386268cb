"""Services reachable beyond loopback refuse to start with a placeholder or development secret.

`.env.example`'s `change-me-…` values and the built-in defaults (`dev-api-key`, …) are public: a service that
other machines can reach must not run with them. On loopback they are fine, so `make dev` needs no `.env`.
"Beyond loopback" is judged per service from its own settings: the API from its bind host
(KTOFORGE_API_HOST), a worker from the hosts it talks to (KTOFORGE_REDIS_URL, KTOFORGE_API_URL), Flower from
its `--address`. One function, `refuse_weak_secrets`, decides for all three; `check_api` runs in the API's
`create_app`, and `guard_celery` hooks the worker's and Flower's start (`celery … worker`, `celery … flower`).
"""

from __future__ import annotations

import ipaddress
import sys
from collections.abc import Iterable
from urllib.parse import urlsplit

from ktoforge.settings import Settings, get_settings

PLACEHOLDER_PREFIX = "change-me"  # every secret of .env.example starts so; `ktoforge init` replaces them all


def is_loopback(host: str | None) -> bool:
    """Only literal loopback counts: a wildcard ("", 0.0.0.0, ::) or any other name reaches the network."""
    if host is None:  # a URL without a host (unix socket): nothing on the network
        return True
    host = host.strip("[]").lower()
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _default(field: str) -> str:
    """The built-in development value of a secret field (public: it is in the source)."""
    return Settings.model_fields[field].default.get_secret_value()


def weak_reason(variable: str, value: str, development: str = "") -> str | None:
    """Why ``value`` must not guard a reachable service, or None when it may."""
    if not value:
        return f"{variable} is empty"
    if value.lower().startswith(PLACEHOLDER_PREFIX):
        return f"{variable} is still the placeholder from .env.example ({PLACEHOLDER_PREFIX}…)"
    if development and value == development:
        return f"{variable} is the built-in development value '{development}'"
    return None


def redis_reason(redis_url: str) -> str | None:
    """The password inside KTOFORGE_REDIS_URL: never a placeholder; required when Redis is on another host."""
    parts = urlsplit(redis_url)
    password = parts.password or ""
    user = parts.username or "default"
    variable = "KTOFORGE_REDIS_URL's password (" + (
        "KTOFORGE_REDIS_PASSWORD)" if user == "default" else f"of Redis user '{user}')")
    if not password:
        return None if is_loopback(parts.hostname) else f"{variable} is empty while Redis is at {parts.hostname}"
    return weak_reason(variable, password)


def set_reason(variable: str, value: str) -> str | None:
    """A secret that may be unset where this service does not use it, but never left a placeholder."""
    return weak_reason(variable, value) if value else None


def refuse_weak_secrets(service: str, hosts: Iterable[str | None], reasons: Iterable[str | None]) -> None:
    """Exit (status 1, naming every offending variable) if any host is beyond loopback and a reason holds."""
    hosts = list(hosts)
    if all(is_loopback(h) for h in hosts):
        return
    found = [r for r in reasons if r]
    if found:
        exposed = ", ".join(repr(h) if h else "'' (all interfaces)" for h in hosts if not is_loopback(h))
        raise SystemExit(f"[ktoforge] {service} refuses to start: it is reachable beyond loopback ({exposed}) and\n  "
                         + "\n  ".join(found)
                         + "\n  Run `ktoforge init` (or `make env`) for a .env with fresh secrets, or set them.")


def check_api(settings: Settings) -> None:
    """The API: user key and worker token must differ (anywhere), and be real secrets off loopback."""
    if settings.api_key.get_secret_value() == settings.worker_token.get_secret_value():
        raise SystemExit("[ktoforge] api refuses to start: KTOFORGE_API_KEY equals KTOFORGE_WORKER_TOKEN, which "
                         "would let every user into the worker-only routes; give them different values")
    refuse_weak_secrets("api", [settings.api_host], [
        weak_reason("KTOFORGE_API_KEY", settings.api_key.get_secret_value(), _default("api_key")),
        weak_reason("KTOFORGE_WORKER_TOKEN", settings.worker_token.get_secret_value(), _default("worker_token")),
        redis_reason(settings.redis_url),
        # compose's redis-server takes these from the same .env: the API refuses to front placeholders
        set_reason("KTOFORGE_REDIS_PASSWORD", settings.redis_password.get_secret_value()),
        set_reason("KTOFORGE_REDIS_WORKER_PASSWORD", settings.redis_worker_password.get_secret_value()),
    ])


def check_worker(settings: Settings) -> None:
    """A worker: exposed when the Redis or the API it joins is on another host (the Mac worker on the LAN)."""
    refuse_weak_secrets("worker", [urlsplit(settings.redis_url).hostname, urlsplit(settings.api_url).hostname], [
        weak_reason("KTOFORGE_WORKER_TOKEN", settings.worker_token.get_secret_value(), _default("worker_token")),
        redis_reason(settings.redis_url),
    ])


def check_flower(settings: Settings, address: str, basic_auth: list[str], oauth: str) -> None:
    """Flower, from its parsed options: its login (basic auth, unless OAuth is configured) and its Redis."""
    reasons = [redis_reason(settings.redis_url)]
    if not basic_auth and not oauth:
        reasons.append("Flower has no login: set FLOWER_BASIC_AUTH=<KTOFORGE_FLOWER_USER>:<KTOFORGE_FLOWER_PASSWORD>")
    for entry in basic_auth:
        reasons.append(weak_reason("KTOFORGE_FLOWER_PASSWORD (Flower's basic auth)", entry.partition(":")[2],
                                   _default("flower_password")))
    refuse_weak_secrets("flower", [address], reasons)


def _on_worker_init(sender: object = None, **kwargs: object) -> None:
    check_worker(get_settings())


def _on_import_modules(sender: object = None, **kwargs: object) -> None:
    """Sent in Flower's constructor, once its options are parsed; also by workers, which worker_init covers."""
    import click

    ctx = click.get_current_context(silent=True)
    if ctx is None or ctx.info_name != "flower" or "tornado.options" not in sys.modules:
        return
    from tornado.options import options

    check_flower(get_settings(), options.address, list(options.basic_auth or []), options.auth or "")


def guard_celery(app: object) -> None:
    """Hook the checks into `celery -A <app> worker` and `celery -A <app> flower` (the API only sends tasks)."""
    from celery import signals

    signals.worker_init.connect(_on_worker_init, weak=False, dispatch_uid="ktoforge.secret_guard.worker")
    signals.import_modules.connect(_on_import_modules, sender=app, weak=False)
