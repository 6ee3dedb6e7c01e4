"""Malformed and hostile requests get protocol-shaped errors or a closed connection; the server
never crashes or hangs, and serves the next request normally."""

import json
import os
import select
import socket
import time

import pytest

SIGNED_STS = "AWS4-HMAC-SHA256 Credential=AKID/20240101/us-east-1/sts/aws4_request, SignedHeaders=host, Signature=0"


def exchange(stratus, raw, timeout=10):
    """Sends raw bytes, returns everything the server answers before it closes or goes quiet."""
    with stratus.connect(timeout) as sock:
        sock.sendall(raw)
        sock.shutdown(socket.SHUT_WR)
        chunks = []
        try:
            while chunk := sock.recv(65536):
                chunks.append(chunk)
        except ConnectionResetError:
            pass
        return b"".join(chunks)


def request(method, body=b"", headers=()):
    head = [f"{method} / HTTP/1.1", "Host: localhost", f"Content-Length: {len(body)}", "Connection: close", *headers]
    return ("\r\n".join(head) + "\r\n\r\n").encode() + body


def status_and_body(response):
    head, _, body = response.partition(b"\r\n\r\n")
    return int(head.split(b" ")[1]), body


@pytest.fixture
def still_healthy(stratus):
    yield
    assert stratus.process.poll() is None, "stratus died"
    assert stratus.client("sts").get_caller_identity()["Account"] == "000000000000"


def test_garbage_form_body(stratus, still_healthy):
    garbage = bytes(range(256)) * 4
    status, body = status_and_body(exchange(stratus, request("POST", garbage, ["Content-Type: application/x-www-form-urlencoded", f"Authorization: {SIGNED_STS}"])))
    assert status == 400 and b"<Code>MissingAction</Code>" in body


def test_garbage_json_body_to_json_service(stratus, still_healthy):
    headers = ["Content-Type: application/x-amz-json-1.0", "X-Amz-Target: DynamoDB_20120810.ListTables"]
    status, body = status_and_body(exchange(stratus, request("POST", b"\x00{{{not json", headers)))
    assert status == 400 and json.loads(body)["__type"] == "SerializationException"
    headers = ["Content-Type: application/x-amz-json-1.0", "X-Amz-Target: SimpleWorkflowService.ListDomains"]
    status, body = status_and_body(exchange(stratus, request("POST", b"\x00{{{not json", headers)))
    assert status == 501 and json.loads(body)["__type"] == "NotImplemented"


def test_wrong_content_type(stratus, still_healthy):
    # A form sent as JSON is not read as a form: no Action.
    headers = ["Content-Type: application/json", f"Authorization: {SIGNED_STS}"]
    status, body = status_and_body(exchange(stratus, request("POST", b"Action=GetCallerIdentity", headers)))
    assert status == 400 and b"<Code>MissingAction</Code>" in body and b"<ErrorResponse" in body


def test_missing_headers(stratus, still_healthy):
    # No Host, no Content-Type, no Authorization, no Content-Length.
    response = exchange(stratus, b"POST / HTTP/1.1\r\nConnection: close\r\n\r\n")
    status, body = status_and_body(response)
    assert status == 400 and b"<Code>MissingAction</Code>" in body
    # HTTP/1.0 with nothing at all.
    status, _ = status_and_body(exchange(stratus, b"GET / HTTP/1.0\r\n\r\n"))
    assert status == 400


def test_ten_megabytes_of_random_body(stratus, still_healthy):
    junk = os.urandom(10 * 1024 * 1024)
    for content_type in ["application/x-www-form-urlencoded", "application/x-amz-json-1.0", "application/octet-stream"]:
        status, body = status_and_body(exchange(stratus, request("POST", junk, [f"Content-Type: {content_type}"]), timeout=30))
        assert status == 400 and b"<Code>MissingAction</Code>" in body, content_type


def test_ten_megabytes_of_random_bytes_instead_of_http(stratus, still_healthy):
    junk = os.urandom(10 * 1024 * 1024)
    with stratus.connect(30) as sock:
        try:
            sock.sendall(junk)
            answer = sock.recv(65536)
        except (ConnectionResetError, BrokenPipeError):
            answer = b""
    # Either a 400 from the HTTP parser or a closed connection.
    assert answer == b"" or answer.startswith(b"HTTP/1.1 400"), answer[:100]


def test_body_over_the_limit_is_413_in_protocol_shape(stratus, still_healthy):
    body = b"x" * (16 * 1024 * 1024 + 1)
    headers = ["Content-Type: application/x-amz-json-1.0", "X-Amz-Target: AmazonSQS.SendMessage"]
    status, answer = status_and_body(exchange(stratus, request("POST", body, headers), timeout=30))
    assert status == 413 and json.loads(answer)["__type"] == "RequestEntityTooLarge"


def test_lying_content_length_does_not_hang(stratus, still_healthy):
    # Claims 1000 bytes, sends 10, then closes its side: the body is incomplete.
    raw = request("POST", b"Action=Get", ["Content-Type: application/x-www-form-urlencoded"]).replace(b"Content-Length: 10", b"Content-Length: 1000")
    response = exchange(stratus, raw)
    assert response == b"" or status_and_body(response)[0] == 400


def test_slowloris_is_disconnected(start_stratus):
    stratus = start_stratus("slow", args=("--ephemeral", "--idle-timeout", "3"))
    sock = stratus.connect(timeout=15)
    sock.sendall(b"POST / HTTP/1.1\r\nHost: localhost\r\n")
    started = time.monotonic()
    closed_after = None
    while closed_after is None and time.monotonic() - started < 15:
        # While the slow client trickles, everyone else is served.
        assert stratus.client("sts").get_caller_identity()["Account"] == "000000000000"
        try:
            sock.sendall(b"X-Slow: 1\r\n")
            readable, _, _ = select.select([sock], [], [], 0.5)
            answer = sock.recv(65536) if readable else None
        except (BrokenPipeError, ConnectionResetError):
            answer = b""
        if answer is not None:
            assert answer == b"" or answer.startswith(b"HTTP/1.1 4"), answer[:100]
            closed_after = time.monotonic() - started
    sock.close()
    assert closed_after is not None and closed_after < 6, "the slow client was never disconnected"
    assert stratus.client("sts").get_caller_identity()["Account"] == "000000000000"


def test_idle_keep_alive_connections_are_kept(stratus):
    with stratus.connect() as sock:
        for _ in range(2):
            sock.sendall(b"GET /_stratus/health HTTP/1.1\r\nHost: localhost\r\n\r\n")
            assert sock.recv(65536).startswith(b"HTTP/1.1 200")
            time.sleep(6)  # longer than any head needs, shorter than the 60 s idle limit


@pytest.mark.parametrize("raw", [
    b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03",  # a TLS ClientHello on the plain port
    b"GET /" + b"a" * 100_000 + b" HTTP/1.1\r\n\r\n",  # an enormous request line
    b"GET / HTTP/1.1\r\n" + b"X-Big: " + b"b" * 200_000 + b"\r\n\r\n",  # an enormous header
    b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",  # a bad chunk
    b"\r\n\r\n\r\n",
])
def test_broken_http_gets_400_or_close(stratus, still_healthy, raw):
    response = exchange(stratus, raw)
    assert response == b"" or response.startswith(b"HTTP/1.1 4"), response[:200]
