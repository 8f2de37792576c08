"""The model server's own HTTP/1.1 layer (konan.serving.http), over raw sockets against a real
server: pipelining, Expect: 100-continue, HEAD, HTTP/1.0, oversized headers and bodies,
malformed requests, and idle connections. Clients are strict here on purpose: every answer is
read byte for byte, so a missing, extra or out-of-order answer fails the test."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator

import orjson
import pytest

from tests.serving.serving_harness import (
    ROW,
    Deployment,
    KeyServer,
    ServerProcess,
    onnx_logistic,
    served,
    spec,
    wait_for,
)

KEY = "kn_good_key_for_http_tests_01"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    keys = KeyServer().start()
    keys.add(KEY)
    deployment = Deployment(tmp_path_factory.mktemp("http"))
    sha = deployment.put(onnx_logistic(deployment.root))
    deployment.write(spec([served(1, sha)], keys.url))
    process = ServerProcess(deployment)
    process.wait_ready()
    yield process
    process.stop()
    keys.stop()


@pytest.fixture
def conn(server: ServerProcess) -> Iterator[Conn]:
    connection = Conn(server)
    yield connection
    connection.close()


class Answer:
    def __init__(self, status: int, headers: dict[str, str], body: bytes) -> None:
        self.status = status
        self.headers = headers
        self.body = body


class Conn:
    """One TCP connection; reads answers with an explicit Content-Length, as HTTP/1.1 says."""

    def __init__(self, server: ServerProcess) -> None:
        self.sock = socket.create_connection(("127.0.0.1", server.port), timeout=10)
        self.buffer = b""

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def _fill(self) -> bool:
        chunk = self.sock.recv(65536)
        self.buffer += chunk
        return bool(chunk)

    def read(self, *, head: bool = False) -> Answer:
        while b"\r\n\r\n" not in self.buffer:
            assert self._fill(), f"the connection closed before an answer: {self.buffer!r}"
        raw, self.buffer = self.buffer.split(b"\r\n\r\n", 1)
        lines = raw.decode("latin-1").split("\r\n")
        status = int(lines[0].split(" ")[1])
        headers = {}
        for line in lines[1:]:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        length = 0 if head or status == 100 else int(headers["content-length"])
        while len(self.buffer) < length:
            assert self._fill(), "the connection closed in the middle of a body"
        body, self.buffer = self.buffer[:length], self.buffer[length:]
        return Answer(status, headers, body)

    def closed(self, timeout: float = 5.0) -> bool:
        """The server closed its side: recv gives EOF (after any bytes still buffered)."""
        self.sock.settimeout(timeout)
        try:
            while self._fill():
                pass
        except ConnectionResetError:
            return True
        except TimeoutError:
            return False
        return True

    def close(self) -> None:
        self.sock.close()


def predict_request(body: bytes, *, key: str = KEY, request_id: str = "", extra: str = "") -> bytes:
    headers = (
        "POST /predict HTTP/1.1\r\nHost: test\r\nContent-Type: application/json\r\n"
        f"Authorization: Bearer {key}\r\nContent-Length: {len(body)}\r\n"
    )
    if request_id:
        headers += f"X-Request-Id: {request_id}\r\n"
    return (headers + extra + "\r\n").encode() + body


GOOD = orjson.dumps({"inputs": [ROW]})


def test_pipelined_requests_are_answered_in_order_on_one_connection(conn: Conn) -> None:
    conn.send(
        predict_request(GOOD, request_id="pipe-1")
        + predict_request(GOOD, key="kn_wrong_key_000000000000000", request_id="pipe-2")
        + b"GET /healthz HTTP/1.1\r\nHost: test\r\n\r\n"
        + predict_request(GOOD, request_id="pipe-4")
    )
    answers = [conn.read() for _ in range(4)]
    assert [a.status for a in answers] == [200, 401, 200, 200]
    assert answers[0].headers["x-request-id"] == "pipe-1"
    assert answers[1].headers["x-request-id"] == "pipe-2"
    assert orjson.loads(answers[2].body) == {"status": "ok"}
    assert answers[3].headers["x-request-id"] == "pipe-4"
    assert orjson.loads(answers[3].body)["predictions"] in ([0], [1])
    # Still open and usable.
    conn.send(predict_request(GOOD))
    assert conn.read().status == 200


def test_a_body_sent_in_pieces_is_read_whole(conn: Conn) -> None:
    request = predict_request(GOOD, request_id="pieces")
    for i in range(0, len(request), 7):
        conn.send(request[i : i + 7])
        time.sleep(0.001)
    answer = conn.read()
    assert answer.status == 200
    assert answer.headers["x-request-id"] == "pieces"


def test_a_chunked_body_is_accepted(conn: Conn) -> None:
    half = len(GOOD) // 2
    chunks = b"%x\r\n%s\r\n%x\r\n%s\r\n0\r\n\r\n" % (
        half,
        GOOD[:half],
        len(GOOD) - half,
        GOOD[half:],
    )
    conn.send(
        b"POST /predict HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n"
        + f"Authorization: Bearer {KEY}\r\nTransfer-Encoding: chunked\r\n\r\n".encode()
        + chunks
    )
    assert conn.read().status == 200


def test_expect_100_continue_gets_continue_then_the_answer(conn: Conn) -> None:
    head = predict_request(b"", extra="Expect: 100-continue\r\n").replace(
        b"Content-Length: 0", b"Content-Length: %d" % len(GOOD)
    )
    conn.send(head)
    assert conn.read().status == 100
    conn.send(GOOD)
    assert conn.read().status == 200


def test_expect_100_continue_refused_at_the_head_answers_and_closes(conn: Conn) -> None:
    head = predict_request(
        b"", key="kn_wrong_key_000000000000000", extra="Expect: 100-continue\r\n"
    )
    head = head.replace(b"Content-Length: 0", b"Content-Length: %d" % len(GOOD))
    conn.send(head)  # the body is never sent: the client waits for 100 Continue
    answer = conn.read()
    assert answer.status == 401
    assert answer.headers["connection"] == "close"
    assert conn.closed()


def test_head_answers_headers_without_a_body_and_keeps_the_connection(
    conn: Conn,
) -> None:
    conn.send(b"HEAD /healthz HTTP/1.1\r\nHost: t\r\n\r\n")
    answer = conn.read(head=True)
    assert answer.status == 200
    assert int(answer.headers["content-length"]) > 0
    conn.send(b"GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n")
    assert orjson.loads(conn.read().body) == {"status": "ok"}


def test_http_1_0_gets_its_answer_and_the_connection_closes(conn: Conn) -> None:
    conn.send(b"GET /healthz HTTP/1.0\r\n\r\n")
    answer = conn.read()
    assert answer.status == 200
    assert answer.headers["connection"] == "close"
    assert conn.closed()


def test_connection_close_from_the_client_is_honoured(conn: Conn) -> None:
    conn.send(predict_request(GOOD, extra="Connection: close\r\n"))
    answer = conn.read()
    assert answer.status == 200
    assert answer.headers["connection"] == "close"
    assert conn.closed()


@pytest.mark.parametrize(
    "raw",
    [
        b"THIS IS NOT HTTP\r\n\r\n",
        b"GET /healthz HTTP/1.1\r\nHost: t\r\nContent-Length: nope\r\n\r\n",
        b"GET /healthz HTTP/9.9\r\n\r\n",
    ],
    ids=["garbage", "bad-content-length", "bad-version"],
)
def test_a_malformed_request_is_400_json_and_closed(conn: Conn, raw: bytes) -> None:
    conn.send(raw)
    answer = conn.read()
    assert answer.status == 400
    assert orjson.loads(answer.body)["code"] == "bad_request"
    assert conn.closed()


def test_headers_over_the_limit_are_431_and_closed(conn: Conn) -> None:
    conn.send(b"GET /healthz HTTP/1.1\r\nHost: t\r\nX-Big: " + b"a" * 70_000 + b"\r\n\r\n")
    answer = conn.read()
    assert answer.status == 431
    assert conn.closed()


def test_a_chunked_body_over_the_limit_is_413_and_the_client_gets_the_answer(
    conn: Conn,
) -> None:
    """No Content-Length to refuse up front: the server counts while it reads, answers 413 once
    the limit is passed, and keeps draining what the client still sends so the answer is not
    lost to a connection reset."""
    conn.send(
        b"POST /predict HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n"
        + f"Authorization: Bearer {KEY}\r\nTransfer-Encoding: chunked\r\n\r\n".encode()
    )
    piece = b"%x\r\n%s\r\n" % (1024 * 1024, b" " * (1024 * 1024))
    for _ in range(17):  # 17 MiB, over the 16 MiB default
        conn.send(piece)
    answer = conn.read()
    assert answer.status == 413
    assert orjson.loads(answer.body)["code"] == "payload_too_large"
    assert conn.closed()


def test_an_idle_connection_is_closed_after_the_keep_alive_timeout(conn: Conn) -> None:
    conn.send(b"GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n")
    assert conn.read().status == 200
    started = time.monotonic()
    assert conn.closed(timeout=15)
    assert 3.0 <= time.monotonic() - started <= 10.0  # uvicorn's default: 5 s


def test_many_connections_each_get_their_answers(server: ServerProcess) -> None:
    conns = [Conn(server) for _ in range(50)]
    try:
        for i, conn in enumerate(conns):
            conn.send(predict_request(GOOD, request_id=f"many-{i}"))
        for i, conn in enumerate(conns):
            answer = conn.read()
            assert answer.status == 200
            assert answer.headers["x-request-id"] == f"many-{i}"
        wait_for(lambda: server.deployment.records_for("many-49"))
    finally:
        for conn in conns:
            conn.close()
