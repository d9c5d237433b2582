"""The connection driver's in-memory test fixtures: a recording adapter and a fake server.

:class:`Recorder` records what the driver asks for and moves its clock by
hand; :class:`FakeServer` holds the settings. ``benchmarks/http_cost.py``
drives the driver with them too.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any

from securemcp import SecureMCP, SecurityPolicy
from securemcp.backends._calls import Gate
from securemcp.backends._driver import ConnectionDriver
from securemcp.backends._pubsub import LoopThread
from securemcp.backends._security import ConnectionGuard
from securemcp.backends._settings import ServerSettings
from securemcp.protocol import ToolCall

from .helpers import UPGRADE_REQUEST, split_server_frames, text_frame


def tool_app() -> SecureMCP:
    app = SecureMCP("driven")

    @app.tool()
    async def quick(message: str) -> str:
        return message

    @app.tool()
    async def slow(message: str) -> str:
        await _Never()
        return message

    return app


class _Never:
    def __await__(self) -> Any:
        yield


@dataclass
class Recorder:
    """The adapter: records what the driver asks for; the clock moves by hand."""

    clock: float = 100.0
    wakes: int = 0
    aborted: bool = False
    deadline: float = math.inf
    spawned: list[ToolCall] = field(default_factory=list)
    cancelled: list[ToolCall] = field(default_factory=list)
    gates: list[Gate | None] = field(default_factory=list)
    started: list[Callable[[], Coroutine[Any, Any, None]]] = field(default_factory=list)
    is_reading: bool = True

    def now(self) -> float:
        return self.clock

    def wake(self) -> None:
        self.wakes += 1

    def spawn(self, call: ToolCall, gate: Gate | None = None) -> Callable[[], object]:
        self.spawned.append(call)
        self.gates.append(gate)
        return lambda: self.cancelled.append(call)

    def start(self, work: Callable[[], Coroutine[Any, Any, None]]) -> None:
        self.started.append(work)

    def set_deadline(self, when: float) -> None:
        self.deadline = when

    def abort(self) -> None:
        self.aborted = True

    def buffered(self) -> int:
        return 0

    def reading(self) -> bool:
        return self.is_reading


@dataclass
class FakeServer:
    settings: ServerSettings
    draining: bool = False
    finished_calls: int = 0
    loop: LoopThread = field(
        default_factory=lambda: LoopThread(threading.get_ident(), None)  # type: ignore[arg-type]
    )

    def call_finished(self) -> None:
        self.finished_calls += 1


def driven(
    *, refuse: bool = False, security: SecurityPolicy | None = None, **options: Any
) -> tuple[ConnectionDriver, Recorder, FakeServer]:
    settings: dict[str, Any] = {
        "limits": None,
        "handshake_timeout": 10.0,
        "ping_interval": 20.0,
        "ping_timeout": 20.0,
        "close_timeout": 5.0,
        "ssl": None,
        **options,
    }
    guard = ConnectionGuard(security if security is not None else SecurityPolicy())
    server = FakeServer(ServerSettings(tool_app(), guard=guard, **settings))
    adapter = Recorder()
    driver = ConnectionDriver(server, adapter, ("127.0.0.1", 40000), refuse=refuse)
    driver.start()
    return driver, adapter, server


def upgraded(**options: Any) -> tuple[ConnectionDriver, Recorder, FakeServer]:
    driver, adapter, server = driven(**options)
    driver.data_received(UPGRADE_REQUEST)
    head = output(driver)
    assert head.startswith(b"HTTP/1.1 101 ")
    return driver, adapter, server


def output(driver: ConnectionDriver) -> bytes:
    """Everything the driver has to write now, joined."""
    return b"".join(driver.take_output())


def frames(driver: ConnectionDriver) -> list[tuple[int, bytes]]:
    return split_server_frames(output(driver))


def call(name: str, request_id: int = 1, message: str = "hi") -> bytes:
    return text_frame(
        {"id": request_id, "method": "invoke_tool",
         "params": {"tool_name": name, "params": {"message": message}}}
    )  # fmt: skip
