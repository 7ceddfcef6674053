"""HTTP boot protocol core (sans-IO, h11): request head, connection cycle, path decoding,
Range, routing, responses. No sockets."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cloudctl.boot.files import FileRefused, resolve_under
from cloudctl.boot.http_proto import (
    HEAD_TIMEOUT,
    IDLE_TIMEOUT,
    MAX_HEAD,
    MAX_REQUESTS_PER_CONNECTION,
    Body,
    FileBody,
    HttpConnection,
    HttpError,
    RangeNotSatisfiable,
    Request,
    Wait,
    check_method,
    decode_path,
    error_body,
    normalize_mac,
    parse_head,
    parse_range,
    plan_response,
    route,
)
from cloudctl.boot.malformed import MalformedHttp, MalformedPacket

# --------------------------------------------------------------------------- head


def test_parse_head_basic_and_keep_alive_default() -> None:
    r = parse_head(b"GET /ipxe/x.ipxe HTTP/1.1\r\nHost: a\r\nX-A: 1\r\nx-a: 2\r\n\r\n")
    assert (r.method, r.target, r.version) == ("GET", "/ipxe/x.ipxe", "HTTP/1.1")
    assert r.headers["x-a"] == "1, 2"
    assert r.keep_alive


@pytest.mark.parametrize(
    ("head", "keep"),
    [
        (b"GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n", False),
        (b"GET / HTTP/1.1\r\nHost: a\r\nConnection: Keep-Alive, TE\r\n\r\n", True),
        (b"GET / HTTP/1.0\r\n\r\n", False),
        # h11 never keeps an HTTP/1.0 connection open (it answers with Connection: close)
        (b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n", False),
    ],
)
def test_keep_alive_rules(head: bytes, keep: bool) -> None:
    assert parse_head(head).keep_alive is keep


@pytest.mark.parametrize(
    ("head", "status"),
    [
        (b"GET / HTTP/1.1\r\n\r\n", 400),  # no Host
        (b"GET /\r\n\r\n", 400),  # HTTP/0.9 style
        (b"GET / HTTP/2.0\r\nHost: a\r\n\r\n", 505),
        (b"GET / FOO/1.1\r\nHost: a\r\n\r\n", 400),
        (b"G(T / HTTP/1.1\r\nHost: a\r\n\r\n", 400),
        (b"GET  / HTTP/1.1\r\nHost: a\r\n\r\n", 400),
        (b"GET / HTTP/1.1\r\nHost: a\r\n folded\r\n\r\n", 400),
        (b"GET / HTTP/1.1\r\nHost a\r\n\r\n", 400),
        (b"GET / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\n", 413),
        (b"GET / HTTP/1.1\r\nHost: a\r\nContent-Length: x\r\n\r\n", 400),
        (b"GET / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n", 400),
        (b"GET / HTTP/1.1\r\nHost: a\r\n" + b"X: y\r\n" * 70 + b"\r\n", 431),
        (b"GET /" + b"a" * MAX_HEAD + b" HTTP/1.1\r\nHost: a\r\n\r\n", 431),
    ],
)
def test_bad_heads(head: bytes, status: int) -> None:
    with pytest.raises(MalformedHttp) as exc:
        parse_head(head)
    assert exc.value.status == status
    assert isinstance(exc.value, MalformedPacket) and isinstance(exc.value, ValueError)
    assert str(exc.value).startswith("http: invalid: request ")


@pytest.mark.parametrize(
    ("head", "field"),
    [
        (b"GET / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\n", "Content-Length"),
        (b"GET / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n", "Transfer-Encoding"),
        (b"GET / HTTP/2.0\r\nHost: a\r\n\r\n", "version"),
        (b"GET / HTTP/1.1\r\nHost: a\r\n folded\r\n\r\n", "headers"),
    ],
)
def test_malformed_head_names_the_field(head: bytes, field: str) -> None:
    with pytest.raises(MalformedHttp) as exc:
        parse_head(head)
    assert exc.value.field == field and field in str(exc.value)


def test_malformed_head_names_the_bad_line() -> None:
    with pytest.raises(MalformedHttp, match="illegal header line: b'Host a'"):
        parse_head(b"GET / HTTP/1.1\r\nHost a\r\n\r\n")


def test_content_length_zero_is_fine() -> None:
    assert parse_head(b"GET / HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\n\r\n").method == "GET"


@settings(max_examples=1500, deadline=None)
@given(st.binary(max_size=400))
def test_parse_head_only_raises_malformed_http(data: bytes) -> None:
    with contextlib.suppress(MalformedHttp):
        parse_head(data)


@settings(max_examples=1500, deadline=None)
@given(
    st.lists(
        st.one_of(
            st.binary(min_size=1, max_size=60),
            st.sampled_from(
                [
                    b"GET /ipxe/x.ipxe HTTP/1.1\r\n",
                    b"HEAD / HTTP/1.1\r\n",
                    b"GET / HTTP/1.0\r\n",
                    b"Host: a\r\n",
                    b"Content-Length: 3\r\n",
                    b"Transfer-Encoding: chunked\r\n",
                    b"Connection: close\r\n",
                    b" fold\r\n",
                    b"\r\n",
                    b"\n",
                ]
            ),
        ),
        max_size=12,
    ),
    st.booleans(),
)
def test_connection_never_crashes_on_garbage(chunks: list[bytes], eof: bool) -> None:
    """Whatever arrives, in whatever pieces: requests, or MalformedHttp (a 4xx/5xx response
    that can always be sent), never another exception."""
    conn = HttpConnection()
    conn.start(0.0)
    feed = [*chunks, b""] if eof else chunks
    for i, chunk in enumerate(feed):
        conn.receive(chunk, float(i))
        for _ in range(20):  # several pipelined requests may be waiting
            try:
                got = conn.next_request()
            except MalformedHttp as exc:
                assert 400 <= exc.status < 600
                wire, keep = conn.error(exc, date=0.0, now=float(i))
                assert wire.startswith(b"HTTP/1.1 %d " % exc.status) and not keep
                assert conn.next_request() is Wait.CLOSED
                return
            if isinstance(got, Wait):
                break
            assert isinstance(got, Request) and got.method
            head = conn.response_head(200, [("Content-Length", "2")], date=0.0)
            assert head.startswith(b"HTTP/1.1 200 OK\r\n")
            if got.method != "HEAD":
                assert conn.body(b"ok") == b"ok"
            if not conn.end(float(i)):
                assert conn.next_request() is Wait.CLOSED
                return


# --------------------------------------------------------------------------- connection


def _serve_one(conn: HttpConnection, request: Request, body: bytes = b"hi") -> tuple[bytes, bool]:
    wire = conn.response_head(200, [("Content-Length", str(len(body)))], date=0.0)
    if request.method != "HEAD":
        wire += conn.body(body)
    return wire, conn.end(1.0)


def test_pipelined_requests_keep_alive_then_close() -> None:
    conn = HttpConnection()
    conn.receive(
        b"GET /a HTTP/1.1\r\nHost: h\r\n\r\n"
        b"HEAD /b HTTP/1.1\r\nHost: h\r\n\r\n"
        b"GET /c HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n",
        0.0,
    )
    targets = []
    wires = []
    while isinstance(req := conn.next_request(), Request):
        targets.append((req.method, req.target))
        wire, keep = _serve_one(conn, req)
        wires.append(wire)
        if not keep:
            break
    assert targets == [("GET", "/a"), ("HEAD", "/b"), ("GET", "/c")]
    assert b"Connection: keep-alive\r\n" in wires[0] and wires[0].endswith(b"\r\n\r\nhi")
    assert wires[1].endswith(b"\r\n\r\n")  # HEAD: headers only
    assert b"Connection: close\r\n" in wires[2]
    assert b"Date: Thu, 01 Jan 1970 00:00:00 GMT\r\n" in wires[0]
    assert conn.next_request() is Wait.CLOSED


def test_http10_gets_connection_close() -> None:
    conn = HttpConnection()
    conn.receive(b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n", 0.0)
    req = conn.next_request()
    assert isinstance(req, Request)
    wire, keep = _serve_one(conn, req)
    assert not keep and b"Connection: close\r\n" in wire


def test_head_arriving_in_pieces_and_deadlines() -> None:
    conn = HttpConnection()
    conn.start(100.0)
    assert conn.deadline == 100.0 + IDLE_TIMEOUT
    conn.receive(b"GET / HT", 105.0)
    assert conn.next_request() is Wait.NEED_DATA
    assert conn.deadline == 105.0 + HEAD_TIMEOUT  # a head started: the shorter clock
    conn.receive(b"TP/1.1\r\nHost: a\r", 106.0)
    assert conn.next_request() is Wait.NEED_DATA
    conn.receive(b"\n\r\n", 107.0)
    req = conn.next_request()
    assert isinstance(req, Request) and req.target == "/"
    _serve_one(conn, req)  # ends at now=1.0
    assert conn.next_request() is Wait.NEED_DATA
    assert conn.deadline == 1.0 + IDLE_TIMEOUT


def test_peer_closing_between_and_inside_requests() -> None:
    conn = HttpConnection()
    conn.receive(b"", 0.0)
    assert conn.next_request() is Wait.CLOSED
    conn = HttpConnection()
    conn.receive(b"GET / HTTP/1.1\r\nHo", 0.0)
    assert conn.next_request() is Wait.NEED_DATA
    conn.receive(b"", 1.0)
    assert conn.next_request() is Wait.CLOSED  # half a head, then gone: nobody to answer


def test_folded_header_only_fails_its_own_request() -> None:
    conn = HttpConnection()
    conn.receive(b"GET /a HTTP/1.1\r\nHost: h\r\n\r\nGET /b HTTP/1.1\r\nHost: h\r\n x\r\n\r\n", 0)
    first = conn.next_request()
    assert isinstance(first, Request) and first.target == "/a"
    _serve_one(conn, first)
    with pytest.raises(MalformedHttp, match="folding"):
        conn.next_request()


def test_request_limit_per_connection_closes() -> None:
    conn = HttpConnection()
    for i in range(MAX_REQUESTS_PER_CONNECTION):
        conn.receive(b"GET / HTTP/1.1\r\nHost: h\r\n\r\n", float(i))
        req = conn.next_request()
        assert isinstance(req, Request)
        wire, keep = _serve_one(conn, req)
        assert keep is (i < MAX_REQUESTS_PER_CONNECTION - 1)
    assert b"Connection: close" in wire
    assert conn.next_request() is Wait.CLOSED


def test_error_responses() -> None:
    conn = HttpConnection()
    conn.receive(b"POST /x HTTP/1.1\r\nHost: h\r\n\r\nHEAD /y HTTP/1.1\r\nHost: h\r\n\r\n", 0)
    req = conn.next_request()
    assert isinstance(req, Request)
    with pytest.raises(HttpError) as exc:
        check_method(req)
    wire, keep = conn.error(exc.value, date=0.0, now=0.0)
    assert keep and wire.startswith(b"HTTP/1.1 405 Method Not Allowed\r\n")
    assert b"Allow: GET, HEAD\r\n" in wire and wire.endswith(
        b"405 Method Not Allowed: method POST not allowed\n"
    )
    req = conn.next_request()
    assert isinstance(req, Request) and req.method == "HEAD"
    wire, keep = conn.error(HttpError(404, "not found", close=False), date=0.0, now=0.0)
    assert keep and wire.startswith(b"HTTP/1.1 404 ") and wire.endswith(b"\r\n\r\n")  # HEAD
    status, headers, _ = error_body(RangeNotSatisfiable("beyond", 77))
    assert status == 416 and ("Content-Range", "bytes */77") in headers


def test_file_body_is_accounted_not_copied() -> None:
    conn = HttpConnection()
    conn.receive(b"GET /k HTTP/1.1\r\nHost: h\r\n\r\n", 0)
    req = conn.next_request()
    assert isinstance(req, Request)
    reply = plan_response(req, FileBody("application/octet-stream", path=Path("/k")), 1 << 30)
    conn.response_head(reply.status, reply.headers, date=0.0)
    conn.file_body(reply.count)  # the transport sendfile()s the gigabyte itself
    assert conn.end(0.0)


# --------------------------------------------------------------------------- paths


@pytest.mark.parametrize(
    ("target", "segments"),
    [
        ("/ipxe/52-54-00-00-00-01.ipxe", ["ipxe", "52-54-00-00-00-01.ipxe"]),
        ("/tftp/snponly.efi?x=1#f", ["tftp", "snponly.efi"]),
        ("http://10.0.0.1:8080/boot/a/kernel", ["boot", "a", "kernel"]),
        ("/tftp/a%20b", ["tftp", "a b"]),
        ("/tftp/%252e%252e", ["tftp", "%2e%2e"]),  # double-encoded stays a literal name
        ("/", [""]),
    ],
)
def test_decode_path(target: str, segments: list[str]) -> None:
    assert decode_path(target) == segments


@pytest.mark.parametrize(
    "target",
    [
        "/tftp/../etc/passwd",
        "/tftp/%2e%2e/etc/passwd",
        "/tftp/%2E%2e/etc/passwd",
        "/tftp/.%2e/x",
        "/tftp/..%2fetc%2fpasswd",
        "/tftp/a%2Fb",
        "/tftp/..%5cwin.ini",
        "/tftp/./a",
        "/tftp/a%00b",
        "/tftp/a%0ab",
        "/tftp/%zz",
        "/tftp/%",
        "/tftp/%ff%fe",
        "/tftp//etc/passwd",
        "tftp/a",
        "*",
    ],
)
def test_traversal_and_garbage_refused(target: str) -> None:
    with pytest.raises(MalformedHttp) as exc:
        decode_path(target)
    assert exc.value.status == 400 and exc.value.field == "target"


# --------------------------------------------------------------------------- ranges


@pytest.mark.parametrize(
    ("header", "size", "expected"),
    [
        (None, 100, None),
        ("bytes=0-0", 100, (0, 0)),
        ("bytes=0-99", 100, (0, 99)),
        ("bytes=10-", 100, (10, 99)),
        ("bytes=50-1000", 100, (50, 99)),  # clamped to the end
        ("bytes=-10", 100, (90, 99)),
        ("bytes=-1000", 100, (0, 99)),  # suffix longer than the file: whole file
        ("BYTES = 5-6", 100, (5, 6)),
        ("bytes=5-4", 100, None),  # invalid: ignored
        ("bytes=0-1,5-6", 100, None),  # several ranges: we send the whole file
        ("items=0-1", 100, None),
        ("bytes=a-b", 100, None),
        ("bytes=-", 100, None),
        ("bytes", 100, None),
    ],
)
def test_parse_range(header: str | None, size: int, expected: tuple[int, int] | None) -> None:
    assert parse_range(header, size) == expected


@pytest.mark.parametrize(
    ("header", "size"),
    [
        ("bytes=100-", 100),
        ("bytes=100-200", 100),
        ("bytes=-0", 100),
        ("bytes=0-", 0),
        ("bytes=-5", 0),
    ],
)
def test_unsatisfiable_range_is_416(header: str, size: int) -> None:
    with pytest.raises(RangeNotSatisfiable) as exc:
        parse_range(header, size)
    assert exc.value.status == 416 and exc.value.size == size and not exc.value.close


def _req(method: str = "GET", **headers: str) -> Request:
    return Request(method, "/x", "HTTP/1.1", {"host": "h", **headers})


def test_plan_response_whole_range_and_head() -> None:
    script = Body(b"#!ipxe\n", "text/plain; charset=utf-8")
    r = plan_response(_req(), script, 7)
    assert (r.status, r.offset, r.count, r.detail) == (200, 0, 7, "GET 200")
    assert ("Cache-Control", "no-store") in r.headers and ("Content-Length", "7") in r.headers
    kernel = FileBody("application/octet-stream", path=Path("/k"))
    r = plan_response(_req(range="bytes=100-199"), kernel, 3000)
    assert (r.status, r.offset, r.count) == (206, 100, 100)
    assert ("Content-Range", "bytes 100-199/3000") in r.headers
    assert r.detail == "GET 206 bytes 100-199/3000"
    assert not any(k == "Cache-Control" for k, _ in r.headers)
    r = plan_response(_req("HEAD"), kernel, 3000)
    assert r.count == 0 and ("Content-Length", "3000") in r.headers


# --------------------------------------------------------------------------- routing


@pytest.mark.parametrize(
    ("text", "mac"),
    [
        ("52-54-00-AA-bb-01", "52:54:00:aa:bb:01"),
        ("52:54:00:aa:bb:01", "52:54:00:aa:bb:01"),
        ("52-54:00-aa-bb-01", None),
        ("5254.00aa.bb01", None),
        ("52-54-00-aa-bb", None),
    ],
)
def test_normalize_mac(text: str, mac: str | None) -> None:
    assert normalize_mac(text) == mac


KNOWN = "52:54:00:10:00:11"


@pytest.fixture()
def env(tmp_path: Path) -> dict[str, object]:
    return {
        "assets": {"kernel": tmp_path / "kernel"},
        "scripts": lambda mac: b"#!ipxe\n" if mac == KNOWN else None,
    }


def test_route_known_script(env: dict[str, object]) -> None:
    r = route(["ipxe", "52-54-00-10-00-11.ipxe"], **env)  # type: ignore[arg-type]
    assert r.body == Body(b"#!ipxe\n", "text/plain; charset=utf-8") and r.mac == KNOWN


def test_route_unknown_mac_gets_exit_script(env: dict[str, object]) -> None:
    r = route(["ipxe", "52-54-00-99-99-99.ipxe"], **env)  # type: ignore[arg-type]
    assert isinstance(r.body, Body)
    text = r.body.data.decode()
    assert text.startswith("#!ipxe") and "exit" in text and "kernel" not in text


def test_route_assets_only_for_known_macs(env: dict[str, object]) -> None:
    r = route(["boot", "52-54-00-10-00-11", "kernel"], **env)  # type: ignore[arg-type]
    assert (
        isinstance(r.body, FileBody) and r.mac == KNOWN and r.body.path == env["assets"]["kernel"]
    )  # type: ignore[index]
    for segs in (
        ["boot", "52-54-00-99-99-99", "kernel"],
        ["boot", "52-54-00-10-00-11", "initramfs.xz"],  # not configured
        ["boot", "52-54-00-10-00-11", "vmlinuz"],
        ["ipxe", "nonsense.ipxe"],
        ["tftp", ""],
        ["other"],
    ):
        with pytest.raises(HttpError) as exc:
            route(segs, **env)  # type: ignore[arg-type]
        assert exc.value.status == 404


def test_route_tftp_root_content_type(env: dict[str, object]) -> None:
    r = route(["tftp", "efi", "snponly.efi"], **env)  # type: ignore[arg-type]
    assert isinstance(r.body, FileBody) and r.body.content_type == "application/efi"
    assert r.body.tftp_parts == ("efi", "snponly.efi") and r.body.path is None


def test_tftp_names_resolve_confined_to_the_root(tmp_path: Path) -> None:
    root = tmp_path / "tftp"
    root.mkdir()
    (root / "snponly.efi").write_bytes(b"MZ")
    os.symlink("/etc/passwd", root / "passwd")
    assert resolve_under(root, ("snponly.efi",)) == (root / "snponly.efi").resolve()
    for parts, missing in ((("passwd",), False), (("missing",), True), ((), False)):
        with pytest.raises(FileRefused) as exc:
            resolve_under(root, parts)
        assert exc.value.missing is missing


def test_route_config_is_opt_in_and_token_redacted(env: dict[str, object]) -> None:
    segs = ["config", "52-54-00-10-00-11", "tok-0123456789.yaml"]
    with pytest.raises(HttpError):
        route(segs, **env)  # type: ignore[arg-type]
    configs = {(KNOWN, "tok-0123456789"): b"machine: {}\n"}
    r = route(segs, configs=lambda m, t: configs.get((m, t)), **env)  # type: ignore[arg-type]
    assert r.body == Body(b"machine: {}\n", "application/yaml")
    assert "tok-" not in r.event_path


_FUZZ_ENV: list[dict[str, object]] = []


@settings(max_examples=1500, deadline=None)
@given(st.text(alphabet="/.%2eEfF5c\\\x00abtp", min_size=1, max_size=30))
def test_tftp_route_never_leaves_root(tmp_path_factory: pytest.TempPathFactory, tail: str) -> None:
    if not _FUZZ_ENV:
        base = tmp_path_factory.mktemp("httpfuzz")
        root = base / "tftp"
        (root / "a").mkdir(parents=True)
        (root / "a" / "b").write_text("b")
        (base / "secret").write_text("s")
        os.symlink(base / "secret", root / "p")
        _FUZZ_ENV.append({"tftp_root": root})
    root = Path(str(_FUZZ_ENV[0]["tftp_root"]))
    try:
        routed = route(decode_path("/tftp/" + tail), assets={}, scripts=lambda mac: None)
        assert isinstance(routed.body, FileBody)
        path = resolve_under(root, routed.body.tftp_parts)
    except (HttpError, MalformedHttp) as exc:
        assert exc.status in (400, 404)
        return
    except FileRefused:
        return  # the transport answers 404
    assert root.resolve() in path.parents
