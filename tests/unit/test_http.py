"""HTTP boot server, pure parts: request head, path decoding, Range, routing."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cloudctl.boot.http import (
    MAX_HEAD,
    Body,
    FileBody,
    HttpError,
    decode_path,
    normalize_mac,
    parse_head,
    parse_range,
    route,
)

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
        (b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n", True),
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
    with pytest.raises(HttpError) as exc:
        parse_head(head)
    assert exc.value.status == status


def test_content_length_zero_is_fine() -> None:
    assert parse_head(b"GET / HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\n\r\n").method == "GET"


@settings(max_examples=1500, deadline=None)
@given(st.binary(max_size=400))
def test_parse_head_only_raises_http_error(data: bytes) -> None:
    with contextlib.suppress(HttpError):
        parse_head(data)


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
    with pytest.raises(HttpError) as exc:
        decode_path(target)
    assert exc.value.status == 400


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
    with pytest.raises(HttpError) as exc:
        parse_range(header, size)
    assert exc.value.status == 416


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
    root = tmp_path / "tftp"
    root.mkdir()
    (root / "snponly.efi").write_bytes(b"MZ")
    os.symlink("/etc/passwd", root / "passwd")
    kernel = tmp_path / "kernel"
    kernel.write_bytes(b"k" * 10)
    return {
        "tftp_root": root,
        "assets": {"kernel": kernel},
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
    assert isinstance(r.body, FileBody) and r.mac == KNOWN
    for segs in (
        ["boot", "52-54-00-99-99-99", "kernel"],
        ["boot", "52-54-00-10-00-11", "initramfs.xz"],  # not configured
        ["boot", "52-54-00-10-00-11", "vmlinuz"],
        ["ipxe", "nonsense.ipxe"],
        ["tftp", "passwd"],  # symlink out of the root
        ["tftp", "missing"],
        ["other"],
    ):
        with pytest.raises(HttpError) as exc:
            route(segs, **env)  # type: ignore[arg-type]
        assert exc.value.status == 404


def test_route_tftp_root_content_type(env: dict[str, object]) -> None:
    r = route(["tftp", "snponly.efi"], **env)  # type: ignore[arg-type]
    assert isinstance(r.body, FileBody) and r.body.content_type == "application/efi"


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
        _FUZZ_ENV.append({"tftp_root": root, "assets": {}, "scripts": lambda mac: None})
    env = _FUZZ_ENV[0]
    try:
        routed = route(decode_path("/tftp/" + tail), **env)  # type: ignore[arg-type]
    except HttpError as exc:
        assert exc.status in (400, 404)
        return
    assert isinstance(routed.body, FileBody)
    root = Path(str(env["tftp_root"])).resolve()
    assert root in routed.body.path.parents
