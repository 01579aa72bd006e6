"""A TCP proxy that injects network faults between a client and a server (a store's edge agent
and the hub, in tests and the demo).

Faults, changeable at run time:

- `down`: the link is cut: a new connection is reset as soon as it is accepted, and the
  connections already open are reset too (nothing more goes through them);
- `drop_rate`: the share of new connections closed before anything is forwarded;
- `delay_ms`: latency added before each chunk forwarded, in either direction;
- `reset_mid_response_rate`: the share of new connections whose request goes through to the
  server, whose response the proxy starts reading and then, instead of forwarding it, resets
  the client's connection (SO_LINGER 0, an RST): the server did the work, the client never sees
  the answer.

Each new connection draws its fate from a seeded RNG (the same seed and the same connections
give the same fates), and `counters` says how many of each fault were injected.

In a test, the proxy runs in its own thread::

    with FaultProxy(0, "127.0.0.1", hub_port, seed=7) as proxy:  # 0: a free port
        client = httpx.Client(base_url=f"http://127.0.0.1:{proxy.port}")
        proxy.set_faults(reset_mid_response_rate=0.2)
        ...
        assert proxy.counters["reset_mid_response"] > 0

As a process (`tillflow sim proxy --listen 8800 --target 127.0.0.1:8700 [--admin-port 8801]`),
its faults change through a small admin HTTP API on the admin port (default: the listen port
+ 1): `GET /faults` answers `{"faults": {...}, "counters": {...}}`; `PATCH /faults` with some of
the faults (`{"down": true}`; `"seed": N` reseeds the RNG) changes those and leaves the others;
`DELETE /faults` clears them all; `GET /healthz` answers once the proxy listens.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import socket
import struct
import threading
from dataclasses import dataclass
from enum import Enum
from types import TracebackType
from typing import Any

from fastapi import Body, FastAPI
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field, ValidationError

CHUNK = 64 * 1024
COUNTERS = (
    "connections",  # accepted
    "forwarded",  # connected to the target and piped (some of them reset mid-response)
    "refused",  # reset on arrival while down
    "cut",  # open connections reset when the link went down
    "dropped",  # closed before anything was forwarded
    "delayed_chunks",  # chunks forwarded late
    "reset_mid_response",  # reset after the target started answering
    "target_unreachable",  # reset because the target did not accept the connection
)


class ProxyFaults(BaseModel):
    """The faults the proxy injects; each left out is none."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    down: bool = False
    drop_rate: float = Field(default=0.0, ge=0, le=1)
    delay_ms: int = Field(default=0, ge=0, le=60_000)
    reset_mid_response_rate: float = Field(default=0.0, ge=0, le=1)


class _Fate(Enum):
    REFUSED = "refused"
    DROPPED = "dropped"
    RESET = "reset"
    FORWARD = "forward"


def _reset(writer: asyncio.StreamWriter) -> None:
    """Close the connection with an RST (SO_LINGER 0), so the peer sees a reset, not an end."""
    sock = writer.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):  # already gone
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()


@dataclass(eq=False)
class _Link:
    """One client connection and, once made, its connection to the target."""

    client: asyncio.StreamWriter
    target: asyncio.StreamWriter | None = None
    done: bool = False

    def cut(self) -> bool:
        """Reset the client and drop the target connection; False when already cut or closed."""
        if self.done:
            return False
        self.done = True
        _reset(self.client)
        if self.target is not None:
            self.target.transport.abort()
        return True

    def close(self) -> None:
        if not self.done:
            self.done = True
            self.client.close()
            if self.target is not None:
                self.target.close()


class FaultProxy:
    """A TCP proxy from `listen_host:listen_port` (0: a free port, then in `port`) to
    `target_host:target_port`, injecting `faults`, in its own thread between `start()` and
    `stop()` (or in a `with` block)."""

    def __init__(
        self,
        listen_port: int,
        target_host: str,
        target_port: int,
        *,
        listen_host: str = "127.0.0.1",
        seed: int = 0,
        faults: ProxyFaults | None = None,
    ) -> None:
        self.listen_host = listen_host
        self.port = listen_port
        self.target_host = target_host
        self.target_port = target_port
        self._lock = threading.Lock()
        self._rng = random.Random(seed)
        self._faults = faults or ProxyFaults()
        self._counts = dict.fromkeys(COUNTERS, 0)
        self._links: set[_Link] = set()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stopping: asyncio.Event | None = None
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()
        self._error: OSError | None = None

    # --- faults and counters ---------------------------------------------------------------------

    @property
    def faults(self) -> ProxyFaults:
        return self._faults

    def set_faults(self, **changes: Any) -> ProxyFaults:
        """Change the faults named (the others stay); raises ValidationError for a bad value.
        Going down resets the connections that are open."""
        with self._lock:
            self._faults = ProxyFaults.model_validate(self._faults.model_dump() | changes)
            faults = self._faults
        loop = self._loop
        if faults.down and loop is not None:
            with contextlib.suppress(RuntimeError):  # the proxy stopped meanwhile: nothing is open
                loop.call_soon_threadsafe(self._cut_all)
        return faults

    def clear_faults(self) -> ProxyFaults:
        """No faults any more."""
        with self._lock:
            self._faults = ProxyFaults()
            return self._faults

    def reseed(self, seed: int) -> None:
        """Start the fate draws again from `seed`."""
        with self._lock:
            self._rng = random.Random(seed)

    @property
    def counters(self) -> dict[str, int]:
        """How many connections were accepted and forwarded, and of each fault injected."""
        with self._lock:
            return dict(self._counts)

    def _count(self, name: str) -> None:
        with self._lock:
            self._counts[name] += 1

    # --- running ---------------------------------------------------------------------------------

    def start(self) -> FaultProxy:
        """Listen and forward in a thread of its own; returns once the proxy listens (raises
        OSError when it cannot)."""
        if self._thread is not None:
            raise RuntimeError("the proxy is already started")
        self._thread = threading.Thread(target=self._run, name=f"fault-proxy-{self.port}", daemon=True)
        self._thread.start()
        self._ready.wait()
        if self._error is not None:
            self._thread.join()
            self._thread = None
            raise self._error
        return self

    def stop(self) -> None:
        """Stop listening, reset the open connections and end the thread."""
        thread, loop, stopping = self._thread, self._loop, self._stopping
        if thread is None:
            return
        if loop is not None and stopping is not None:
            loop.call_soon_threadsafe(stopping.set)
        thread.join()
        self._thread = None

    def __enter__(self) -> FaultProxy:
        return self.start()

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def _run(self) -> None:
        asyncio.run(self._main())

    async def _main(self) -> None:
        self._stopping = asyncio.Event()
        try:
            server = await asyncio.start_server(self._serve, self.listen_host, self.port)
        except OSError as exc:
            self._error = exc
            self._ready.set()
            return
        self.port = int(server.sockets[0].getsockname()[1])
        self._loop = asyncio.get_running_loop()
        self._ready.set()
        try:
            await self._stopping.wait()
        finally:
            self._loop = None
            server.close()
            for link in list(self._links):
                link.cut()
            await server.wait_closed()

    def _cut_all(self) -> None:
        for link in list(self._links):
            if link.cut():
                self._count("cut")

    def _judge(self) -> _Fate:
        """The fate of a new connection; both draws are made for every one, so a seed gives the
        same fates whatever the rates."""
        with self._lock:
            self._counts["connections"] += 1
            faults = self._faults
            drop, reset = self._rng.random(), self._rng.random()
        if faults.down:
            return _Fate.REFUSED
        if drop < faults.drop_rate:
            return _Fate.DROPPED
        return _Fate.RESET if reset < faults.reset_mid_response_rate else _Fate.FORWARD

    async def _serve(self, client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter) -> None:
        fate = self._judge()
        link = _Link(client_writer)
        if fate is _Fate.REFUSED:
            self._count("refused")
            link.cut()
            return
        if fate is _Fate.DROPPED:
            self._count("dropped")
            link.close()
            return
        self._links.add(link)
        try:
            try:
                target_reader, link.target = await asyncio.open_connection(self.target_host, self.target_port)
            except OSError:
                self._count("target_unreachable")
                link.cut()
                return
            self._count("forwarded")
            await asyncio.gather(
                self._pipe(client_reader, link.target, link, response=False),
                self._pipe(target_reader, client_writer, link, response=fate is _Fate.RESET),
            )
        finally:
            self._links.discard(link)
            link.close()

    async def _pipe(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, link: _Link, *, response: bool
    ) -> None:
        """Forward what `reader` gets to `writer` until it ends; `response`: the target's answer
        on a connection fated to be reset mid-response."""
        try:
            while chunk := await reader.read(CHUNK):
                if link.done:
                    return
                if self._faults.down:  # the link went down while this chunk was on its way
                    if link.cut():
                        self._count("cut")
                    return
                if response:
                    if link.cut():
                        self._count("reset_mid_response")
                    return
                delay = self._faults.delay_ms
                if delay:
                    self._count("delayed_chunks")
                    await asyncio.sleep(delay / 1000)
                writer.write(chunk)
                await writer.drain()
            if writer.can_write_eof() and not link.done:
                writer.write_eof()
        except OSError:  # a side reset or went away: so does the other
            link.cut()


def parse_target(text: str) -> tuple[str, int]:
    """`HOST:PORT` as (host, port); raises ValueError when it is not."""
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"{text!r}: the target is HOST:PORT")
    return host.strip("[]"), int(port)


# --- the process -----------------------------------------------------------------------------------


def admin_app(proxy: FaultProxy) -> FastAPI:
    """The admin HTTP API of a proxy process: read, change and clear its faults."""
    app = FastAPI(title="tillflow fault proxy", description="Faults injected between a client and a server.")

    def state() -> dict[str, Any]:
        return {
            "listen": proxy.port,
            "target": f"{proxy.target_host}:{proxy.target_port}",
            "faults": proxy.faults.model_dump(),
            "counters": proxy.counters,
        }

    @app.get("/healthz")
    def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/faults")
    def get_faults() -> dict[str, Any]:
        return state()

    @app.patch("/faults")
    def patch_faults(changes: dict[str, Any] = Body()) -> Any:
        seed = changes.pop("seed", None)
        if seed is not None and (not isinstance(seed, int) or isinstance(seed, bool)):
            return JSONResponse({"errors": [{"field": "seed", "reason": "an integer"}]}, status_code=422)
        try:
            proxy.set_faults(**changes)
        except ValidationError as exc:
            errors = [
                {"field": ".".join(str(p) for p in e["loc"]), "reason": e["msg"]}
                for e in exc.errors(include_url=False)
            ]
            return JSONResponse({"errors": errors}, status_code=422)
        if seed is not None:
            proxy.reseed(seed)
        return state()

    @app.delete("/faults")
    def delete_faults() -> dict[str, Any]:
        proxy.clear_faults()
        return state()

    return app


def serve(
    listen_port: int,
    target_host: str,
    target_port: int,
    *,
    host: str = "127.0.0.1",
    admin_port: int,
    seed: int = 0,
) -> None:
    """Run a proxy and its admin API until interrupted."""
    import uvicorn

    with FaultProxy(listen_port, target_host, target_port, listen_host=host, seed=seed) as proxy:
        uvicorn.run(admin_app(proxy), host=host, port=admin_port, log_level="warning")
