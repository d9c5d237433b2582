"""``securemcp serve``: its options, the app import, TLS, tokens, workers and the shared backends.

``--store URL`` is exported as ``$SECUREMCP_STORE_URL`` before the app module
is imported, so that an app can choose its message store from it::

    store_url = os.environ.get("SECUREMCP_STORE_URL")
    store = app.uses(RedisMessageStore(store_url)) if store_url else InMemoryStore()

``--broker URL`` makes the transport carry rooms and broadcast through
``securemcp.redis.RedisBroker(URL)``; ``--redis URL`` is both at once.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import ssl
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from ._cli_error import CLIError
from .app import SecureMCP
from .auth import StaticTokenAuthenticator
from .security import SecurityPolicy

if TYPE_CHECKING:
    from .pubsub import Broker

__all__ = [
    "LOG_LEVELS",
    "STORE_ENV",
    "add_serve_command",
    "load_app",
    "security_policy",
    "serve",
    "tls_server_context",
]

LOG_LEVELS = ("debug", "info", "warning", "error", "critical")
"""The values ``serve --log-level`` takes, from the most verbose to the quietest."""
STORE_ENV = "SECUREMCP_STORE_URL"
"""The environment variable ``--store URL`` (or ``--redis URL``) sets for the app."""
REDIS_SCHEMES = ("redis", "rediss", "unix")
REDIS_EXTRA = "pip install 'securemcp[redis]'"


def load_app(spec: str) -> SecureMCP:
    """Import ``MODULE[:ATTR.PATH]`` (``ATTR`` defaults to ``app``) from the current directory."""
    module_name, colon, attr_path = spec.partition(":")
    attr_path = attr_path if colon else "app"
    if not module_name or any(not part.isidentifier() for part in attr_path.split(".")):
        raise CLIError(f"invalid app {spec!r}: use MODULE:APP, e.g. chat_server:app", 2)
    # Like uvicorn: the app is found from where the command runs, not from where it is installed.
    cwd = os.getcwd()
    if cwd not in sys.path:
        sys.path.insert(0, cwd)
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name and (module_name == exc.name or module_name.startswith(exc.name + ".")):
            raise CLIError(f"cannot import module {module_name!r}: {exc}") from None
        # A dependency of the user's module is missing: still an environment problem.
        raise CLIError(f"importing {module_name!r} failed: {exc}") from None
    target: Any = module
    for part in attr_path.split("."):
        try:
            target = getattr(target, part)
        except AttributeError:
            raise CLIError(f"module {module_name!r} has no attribute {attr_path!r}") from None
    if not isinstance(target, SecureMCP):
        kind = type(target).__name__
        raise CLIError(f"{module_name}:{attr_path} is not a SecureMCP app (it is a {kind!r})")
    return target


def tls_server_context(cert: str, key: str | None) -> ssl.SSLContext:
    """A server TLS context from PEM files; an unreadable file is a :class:`CLIError`."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    try:
        context.load_cert_chain(cert, key)
    except OSError as exc:
        # ssl.SSLError is an OSError too: a file that is there but is no certificate.
        name = exc.filename or (cert if key is None else f"{cert} / {key}")
        reason = exc.strerror or exc.reason if isinstance(exc, ssl.SSLError) else exc.strerror
        raise CLIError(f"cannot load TLS certificate {name}: {reason or exc}", 2) from None
    return context


def _token_scopes(value: str, app: SecureMCP) -> tuple[str, list[str]]:
    token, sep, scopes = value.partition(":")
    if sep:
        return token, [scope for scope in scopes.split(",") if scope]
    # No scopes named: full access, i.e. every scope some tool of the app requires.
    return token, sorted({scope for tool in app.tools.values() for scope in tool.scopes})


def security_policy(
    tokens: Sequence[str], app: SecureMCP, proxies: Sequence[str] = ()
) -> SecurityPolicy | None:
    """The policy for ``--token`` values (``TOKEN`` or ``TOKEN:SCOPE,...``) and
    ``--trusted-proxy`` ones; ``None`` for neither."""
    if not tokens and not proxies:
        return None
    authenticator = None
    if tokens:
        try:
            authenticator = StaticTokenAuthenticator(dict(_token_scopes(t, app) for t in tokens))
        except ValueError as exc:
            raise CLIError(f"invalid --token: {exc}", 2) from None
    try:
        return SecurityPolicy(
            authenticator=authenticator, allow_anonymous=False, trusted_proxies=tuple(proxies)
        )
    except ValueError as exc:
        raise CLIError(f"invalid --trusted-proxy: {exc}", 2) from None


def shared_urls(args: argparse.Namespace) -> tuple[str | None, str | None]:
    """The broker's and the store's URLs from ``--redis``, ``--broker`` and ``--store``."""
    if args.redis is not None and (args.broker is not None or args.store is not None):
        raise CLIError("--redis already sets --broker and --store: give one or the others", 2)
    broker: str | None = args.redis if args.redis is not None else args.broker
    store: str | None = args.redis if args.redis is not None else args.store
    if broker is not None and urlsplit(broker).scheme not in REDIS_SCHEMES:
        option = "--redis" if args.redis is not None else "--broker"
        raise CLIError(f"{option} {broker!r}: use a redis://, rediss:// or unix:// URL", 2)
    return broker, store


def redis_broker(url: str) -> Broker:
    """``securemcp.redis.RedisBroker(url)``, imported only now: it needs the redis extra."""
    try:
        redis = importlib.import_module("securemcp.redis")
    except ImportError:
        raise CLIError(f"--broker and --redis need the redis extra: {REDIS_EXTRA}", 2) from None
    try:
        broker: Broker = redis.RedisBroker(url)
    except ValueError as exc:
        raise CLIError(f"invalid broker URL {url!r}: {exc}", 2) from None
    return broker


def serve(args: argparse.Namespace) -> int:
    """``securemcp serve``: serve the app until Ctrl+C."""
    from .backends._running import backend_missing
    from .backends._workers import check_workers
    from .transport import WebSocketTransport

    if args.tls_key and not args.tls_cert:
        raise CLIError("--tls-key needs --tls-cert", 2)
    if args.workers < 1:
        raise CLIError(f"--workers must be at least 1, not {args.workers}", 2)
    backend: str = args.backend
    if args.uvloop:
        if backend != "asyncio":
            raise CLIError("--uvloop runs on the asyncio backend only", 2)
        backend = "asyncio+uvloop"
    missing = backend_missing(backend)
    if missing is not None:
        raise CLIError(missing)
    broker_url, store_url = shared_urls(args)
    broker = redis_broker(broker_url) if broker_url is not None else None
    if store_url is not None:
        # Before the import: the app's module reads it to choose its store.
        os.environ[STORE_ENV] = store_url
    app = load_app(args.app)
    context = tls_server_context(args.tls_cert, args.tls_key) if args.tls_cert else None
    transport = WebSocketTransport(
        app,
        ssl=context,
        security=security_policy(args.token, app, args.trusted_proxy),
        broker=broker,
    )
    try:
        check_workers(args.workers, app, transport.broker)
    except (ValueError, RuntimeError) as exc:
        raise CLIError(str(exc), 2) from None
    level = getattr(logging, args.log_level.upper())
    try:
        transport.run(args.host, args.port, backend=backend, log_level=level, workers=args.workers)
    except OSError as exc:
        reason = exc.strerror or str(exc)
        raise CLIError(f"cannot listen on {args.host}:{args.port}: {reason}") from None
    return 0


_SERVE_EXAMPLES = f"""\
examples:
  securemcp serve chat_server:app
  securemcp serve chat_server --port 0 --backend trio      (APP defaults to 'app')
  securemcp serve chat_server:app --host 0.0.0.0 --tls-cert cert.pem --tls-key key.pem
  securemcp serve chat_server:app --token s3cret --token admin-key:admin,write
  securemcp serve chat_server:app --workers 4 --redis redis://127.0.0.1:6379/0

With --token the server refuses connections without one of the tokens (HTTP 401).
TOKEN:SCOPES grants exactly those comma-separated scopes; a bare TOKEN grants every
scope the app's tools require. Ctrl+C stops the server gracefully.

Behind a reverse proxy, --trusted-proxy ADDRESS (or NETWORK/BITS, repeatable) makes
the client the one the proxy names in X-Forwarded-For, for the per-address limits
and the security log; list only proxies you run (docs/security.md).

--workers N (Linux) serves from N processes sharing the port; a worker that dies
is replaced. Processes share rooms and broadcast only through a broker, so N > 1
needs --broker/--redis unless the app is SecureMCP(..., stateless=True).
--store URL is set as ${STORE_ENV} before the app is imported: the app
reads it to choose its store. --redis URL is --broker URL --store URL.
"""


def add_serve_command(commands: Any, formatter: type[argparse.HelpFormatter]) -> None:
    """Add ``serve`` and its options to the subcommands ``commands``."""
    parser: argparse.ArgumentParser = commands.add_parser(
        "serve",
        help="serve a SecureMCP app",
        formatter_class=formatter,
        epilog=_SERVE_EXAMPLES,
        description="Import the SecureMCP app MODULE:APP from the current directory and serve it.",
    )
    parser.add_argument("app", metavar="MODULE:APP", help="e.g. chat_server:app")
    parser.add_argument("--host", default="127.0.0.1", help="default: 127.0.0.1")
    parser.add_argument("--port", type=int, default=8765, help="default: 8765; 0 picks a free port")
    parser.add_argument("--backend", choices=("asyncio", "trio"), default="asyncio")
    parser.add_argument("--uvloop", action="store_true", help="asyncio on uvloop")
    parser.add_argument("--tls-cert", metavar="PEM", help="certificate chain: serve wss://")
    parser.add_argument("--tls-key", metavar="PEM", help="private key (if not in --tls-cert)")
    parser.add_argument(
        "--token",
        action="append",
        default=[],
        metavar="TOKEN[:SCOPES]",
        help="accept this bearer token (repeatable); connections without one are refused",
    )
    parser.add_argument(
        "--trusted-proxy",
        action="append",
        default=[],
        metavar="ADDRESS[/BITS]",
        help="believe X-Forwarded-For from this proxy address or network (repeatable)",
    )
    parser.add_argument(
        "--workers",
        type=int,
        default=1,
        metavar="N",
        help="serve from N processes sharing the port (Linux; default: 1)",
    )
    parser.add_argument(
        "--broker", metavar="URL", help="share rooms and broadcast through Redis at URL"
    )
    parser.add_argument("--store", metavar="URL", help=f"the app's store URL, set as ${STORE_ENV}")
    parser.add_argument("--redis", metavar="URL", help="both --broker URL and --store URL")
    parser.add_argument("--log-level", choices=LOG_LEVELS, default="info")
    parser.set_defaults(handler=serve)
