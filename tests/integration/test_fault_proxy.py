"""The fault-injecting TCP proxy between an HTTP client (httpx, or a bare socket) and a real HTTP
server: what passes through unchanged, a link that is down, dropped connections (the same for
the same seed), added latency, and a reset in the middle of the response — the server handled
the request, the client never sees the answer. Then the same through `tillflow sim proxy`, its
faults changed over its admin API."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest
from pydantic import ValidationError

from tests.servers import free_port
from tillflow.processes import ChildProcess
from tillflow.sim.faultproxy import FaultProxy, parse_target


@dataclass
class Seen:
    """The requests the server handled: (method, path, body)."""

    requests: list[tuple[str, str, bytes]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def paths(self) -> list[str]:
        with self.lock:
            return [path for _, path, _ in self.requests]


class Recorder(BaseHTTPRequestHandler):
    """Answers every request with `echo:` and its body (on /big: a megabyte), and records it."""

    protocol_version = "HTTP/1.1"  # keep-alive: a client may send several requests on a connection
    seen: Seen

    def _answer(self) -> None:
        body = self.rfile.read(int(self.headers.get("content-length") or 0))
        with self.seen.lock:
            self.seen.requests.append((self.command, self.path, body))
        answer = b"x" * 1_000_000 if self.path == "/big" else b"echo:" + body
        self.send_response(200)
        self.send_header("content-length", str(len(answer)))
        self.end_headers()
        self.wfile.write(answer)

    do_GET = _answer
    do_POST = _answer

    def log_message(self, format: str, *args: object) -> None:
        pass


@dataclass
class Server:
    port: int
    seen: Seen


@pytest.fixture
def server() -> Iterator[Server]:
    seen = Seen()
    handler = type("Handler", (Recorder,), {"seen": seen})
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield Server(httpd.server_address[1], seen)
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join()


@pytest.fixture
def proxy(server: Server) -> Iterator[FaultProxy]:
    with FaultProxy(0, "127.0.0.1", server.port, seed=11) as running:
        yield running


def client(proxy: FaultProxy) -> httpx.Client:
    return httpx.Client(base_url=f"http://127.0.0.1:{proxy.port}", timeout=30)


def fresh_get(proxy: FaultProxy, path: str) -> bool:
    """GET `path` on a connection of its own; True when it was answered."""
    try:
        with client(proxy) as c:
            return c.get(path, headers={"connection": "close"}).status_code == 200
    except httpx.TransportError:
        return False


def fresh_gets(proxy: FaultProxy, paths: list[str]) -> list[bool]:
    """GET each of `paths` on a connection of its own; True for each answered."""
    answered = []
    with client(proxy) as c:
        for path in paths:
            try:
                answered.append(c.get(path, headers={"connection": "close"}).status_code == 200)
            except httpx.TransportError:
                answered.append(False)
    return answered


def faults_injected(proxy: FaultProxy) -> dict[str, int]:
    counters = proxy.counters
    return {name: n for name, n in counters.items() if name not in ("connections", "forwarded") and n}


class TestPassThrough:
    def test_requests_and_answers_go_through_unchanged(self, proxy: FaultProxy, server: Server) -> None:
        body = bytes(range(256)) * 1000  # several chunks
        with client(proxy) as c:
            echoed = c.post("/orders", content=body)
            big = c.get("/big")

        assert echoed.status_code == 200 and echoed.content == b"echo:" + body
        assert big.content == b"x" * 1_000_000
        assert server.seen.requests == [("POST", "/orders", body), ("GET", "/big", b"")]
        assert proxy.counters["connections"] == proxy.counters["forwarded"] == 1  # one kept alive
        assert faults_injected(proxy) == {}

    def test_a_target_that_does_not_answer_resets_the_client(self) -> None:
        with FaultProxy(0, "127.0.0.1", free_port()) as proxy:
            answered = fresh_get(proxy, "/nobody")

            assert not answered
            assert faults_injected(proxy) == {"target_unreachable": 1}

    def test_a_port_already_taken_fails_the_start(self, proxy: FaultProxy, server: Server) -> None:
        with pytest.raises(OSError):
            FaultProxy(proxy.port, "127.0.0.1", server.port).start()


class TestDown:
    def test_no_connection_goes_through_while_down_and_they_do_again_after(
        self, proxy: FaultProxy, server: Server
    ) -> None:
        proxy.set_faults(down=True)
        while_down = fresh_gets(proxy, [f"/down/{i}" for i in range(3)])
        proxy.set_faults(down=False)
        after = fresh_get(proxy, "/up")

        assert while_down == [False, False, False]
        assert after
        assert server.seen.paths() == ["/up"]
        assert faults_injected(proxy) == {"refused": 3}

    def test_going_down_cuts_the_connections_already_open(self, proxy: FaultProxy, server: Server) -> None:
        with client(proxy) as c:
            first = c.get("/before")
            proxy.set_faults(down=True)
            with pytest.raises(httpx.TransportError):
                c.get("/after")

        assert first.status_code == 200
        assert server.seen.paths() == ["/before"]
        assert proxy.counters["cut"] == 1


class TestDrop:
    def test_a_dropped_connection_forwards_nothing(self, proxy: FaultProxy, server: Server) -> None:
        proxy.set_faults(drop_rate=1.0)

        with client(proxy) as c, pytest.raises(httpx.TransportError):
            c.post("/orders", content=b"sale")

        assert server.seen.requests == []
        assert faults_injected(proxy) == {"dropped": 1}

    def test_the_same_seed_drops_the_same_connections(self, proxy: FaultProxy, server: Server) -> None:
        proxy.set_faults(drop_rate=0.5)
        proxy.reseed(2026)
        first = fresh_gets(proxy, [f"/first/{i}" for i in range(20)])
        proxy.reseed(2026)
        again = fresh_gets(proxy, [f"/again/{i}" for i in range(20)])

        assert first == again
        assert True in first and False in first
        assert proxy.counters["dropped"] == 2 * first.count(False)
        assert len(server.seen.requests) == 2 * first.count(True)


class TestDelay:
    def test_each_chunk_forwarded_waits_the_delay(self, proxy: FaultProxy, server: Server) -> None:
        proxy.set_faults(delay_ms=150)

        with client(proxy) as c:
            started = time.monotonic()
            answer = c.post("/orders", content=b"sale")
            took = time.monotonic() - started

        assert answer.content == b"echo:sale"
        delayed = proxy.counters["delayed_chunks"]
        assert delayed >= 2  # the request, then the answer
        assert took >= delayed * 0.150 * 0.99
        assert faults_injected(proxy) == {"delayed_chunks": delayed}


class TestResetMidResponse:
    def test_the_server_handles_the_request_and_the_client_gets_a_reset(
        self, proxy: FaultProxy, server: Server
    ) -> None:
        proxy.set_faults(reset_mid_response_rate=1.0)
        request = b"POST /orders HTTP/1.1\r\nHost: hub\r\nContent-Length: 4\r\n\r\nsale"

        with socket.create_connection(("127.0.0.1", proxy.port)) as sock:
            sock.sendall(request)
            with pytest.raises(ConnectionResetError):
                while sock.recv(65536):  # nothing of the answer arrives: a reset
                    pass

        assert server.seen.requests == [("POST", "/orders", b"sale")]
        assert faults_injected(proxy) == {"reset_mid_response": 1}

    def test_an_http_client_sees_an_error_for_work_that_was_done(
        self, proxy: FaultProxy, server: Server
    ) -> None:
        proxy.set_faults(reset_mid_response_rate=1.0)
        with client(proxy) as c, pytest.raises(httpx.ReadError):
            c.post("/orders", content=b"sale 1")
        proxy.set_faults(reset_mid_response_rate=0.0)
        retried = fresh_get(proxy, "/orders/1")

        assert retried
        assert server.seen.paths() == ["/orders", "/orders/1"]
        assert proxy.counters["reset_mid_response"] == 1


class TestFaults:
    def test_a_bad_fault_is_refused_and_the_faults_stay(self, proxy: FaultProxy) -> None:
        proxy.set_faults(delay_ms=5)

        with pytest.raises(ValidationError):
            proxy.set_faults(drop_rate=1.5)
        with pytest.raises(ValidationError):
            proxy.set_faults(blackhole=True)

        assert proxy.faults.delay_ms == 5 and proxy.faults.drop_rate == 0

    def test_clearing_the_faults_lets_everything_through(self, proxy: FaultProxy) -> None:
        proxy.set_faults(down=True, drop_rate=1.0, delay_ms=10, reset_mid_response_rate=1.0)

        proxy.clear_faults()

        assert fresh_get(proxy, "/clear")

    @pytest.mark.parametrize(
        ("text", "parsed"), [("127.0.0.1:8700", ("127.0.0.1", 8700)), ("[::1]:80", ("::1", 80))]
    )
    def test_a_target_is_host_and_port(self, text: str, parsed: tuple[str, int]) -> None:
        assert parse_target(text) == parsed

    @pytest.mark.parametrize("text", ["8700", "hub:", ":8700", "hub:http", "hub:70000"])
    def test_a_target_without_host_or_port_is_refused(self, text: str) -> None:
        with pytest.raises(ValueError, match="HOST:PORT"):
            parse_target(text)


class TestTheProxyProcess:
    def test_faults_are_changed_over_the_admin_api(self, server: Server, tmp_path: Path) -> None:
        listen, admin_port = free_port(), free_port()
        args = ["sim", "proxy", "--listen", str(listen), "--target", f"127.0.0.1:{server.port}"]
        args += ["--admin-port", str(admin_port), "--seed", "5"]
        process = ChildProcess(args, tmp_path / "proxy.log", f"http://127.0.0.1:{admin_port}")
        try:
            process.wait_ready()
            through = f"http://127.0.0.1:{listen}"
            with httpx.Client(base_url=process.url, timeout=30) as admin:
                passed = httpx.get(f"{through}/first", timeout=30)
                down = admin.patch("/faults", json={"down": True})
                with pytest.raises(httpx.TransportError):
                    httpx.get(f"{through}/refused", timeout=30)
                refused = admin.get("/faults").json()
                invalid = admin.patch("/faults", json={"drop_rate": 2})
                cleared = admin.delete("/faults")
                again = httpx.get(f"{through}/again", timeout=30)
        finally:
            process.stop()

        assert passed.status_code == again.status_code == 200
        assert down.json()["faults"]["down"] is True
        assert refused["counters"]["refused"] == 1
        assert invalid.status_code == 422
        assert invalid.json()["errors"][0]["field"] == "drop_rate"
        assert cleared.json()["faults"] == {
            "down": False,
            "drop_rate": 0.0,
            "delay_ms": 0,
            "reset_mid_response_rate": 0.0,
        }
        assert server.seen.paths() == ["/first", "/again"]
