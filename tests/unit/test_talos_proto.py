"""The committed generated modules are current, and our messages hit the upstream field numbers.

The wire checks decode protobuf bytes by hand (tag = field << 3 | wire type) so they do not
trust the generated code they check. Expected numbers: reference/talos-api.md §1.2, §1.3.
"""

from __future__ import annotations

import shutil

import pytest
from google.protobuf import duration_pb2

from cloudctl.talos.proto import (
    common_pb2,
    cosi_resource_grpc,
    cosi_resource_pb2,
    generate,
    machine_grpc,
    machine_pb2,
    storage_grpc,
    storage_pb2,
)

VARINT, I64, LEN, I32 = 0, 1, 2, 5


def _varint(buf: bytes, i: int) -> tuple[int, int]:
    shift = value = 0
    while True:
        b = buf[i]
        i += 1
        value |= (b & 0x7F) << shift
        shift += 7
        if not b & 0x80:
            return value, i


def fields(buf: bytes) -> list[tuple[int, int, int | bytes]]:
    """[(field number, wire type, value)] of one message level."""
    out: list[tuple[int, int, int | bytes]] = []
    i = 0
    while i < len(buf):
        tag, i = _varint(buf, i)
        num, wt = tag >> 3, tag & 7
        if wt == VARINT:
            v, i = _varint(buf, i)
            out.append((num, wt, v))
        elif wt == LEN:
            n, i = _varint(buf, i)
            out.append((num, wt, buf[i : i + n]))
            i += n
        elif wt == I64:
            out.append((num, wt, buf[i : i + 8]))
            i += 8
        elif wt == I32:
            out.append((num, wt, buf[i : i + 4]))
            i += 4
        else:
            raise AssertionError(f"unexpected wire type {wt}")
    return out


def as_dict(buf: bytes) -> dict[int, tuple[int, int | bytes]]:
    return {num: (wt, v) for num, wt, v in fields(buf)}


def test_generated_modules_are_current() -> None:
    if shutil.which("protoc-gen-grpclib_python") is None:
        pytest.skip("grpclib's protoc plugin is not on PATH")
    assert generate.stale_files() == [], "run: python -m cloudctl.talos.proto.generate"


def test_method_paths_use_upstream_package_and_service_names() -> None:
    paths = {
        *machine_grpc.MachineServiceStub.__init__.__code__.co_consts,
        *storage_grpc.StorageServiceStub.__init__.__code__.co_consts,
        *cosi_resource_grpc.StateStub.__init__.__code__.co_consts,
    }
    for p in (
        "/machine.MachineService/ApplyConfiguration",
        "/machine.MachineService/Bootstrap",
        "/machine.MachineService/Version",
        "/machine.MachineService/Kubeconfig",
        "/machine.MachineService/Upgrade",
        "/machine.MachineService/Reboot",
        "/machine.MachineService/EtcdMemberList",
        "/machine.MachineService/Read",
        "/storage.StorageService/Disks",
        "/cosi.resource.State/Get",
        "/cosi.resource.State/List",
    ):
        assert p in paths


def test_apply_configuration_request_fields() -> None:
    req = machine_pb2.ApplyConfigurationRequest(
        data=b"version: v1alpha1\n",
        mode=machine_pb2.ApplyConfigurationRequest.AUTO,
        dry_run=True,
        try_mode_timeout=duration_pb2.Duration(seconds=60),
    )
    f = as_dict(req.SerializeToString())
    assert f[1] == (LEN, b"version: v1alpha1\n")
    assert f[4] == (VARINT, 1)  # mode AUTO=1
    assert f[5] == (VARINT, 1)  # dry_run
    assert f[6][0] == LEN and as_dict(f[6][1]) == {1: (VARINT, 60)}
    assert 2 not in f and 3 not in f  # removed upstream, never reused
    modes = machine_pb2.ApplyConfigurationRequest.Mode
    assert [modes.Value(n) for n in ("REBOOT", "AUTO", "NO_REBOOT", "STAGED", "TRY")] == [
        0,
        1,
        2,
        3,
        4,
    ]


def test_apply_configuration_response_fields() -> None:
    raw = machine_pb2.ApplyConfigurationResponse(
        messages=[
            machine_pb2.ApplyConfiguration(
                metadata=common_pb2.Metadata(
                    hostname="cp1", error="boom", status=common_pb2.RpcStatus(code=3, message="bad")
                ),
                warnings=["w1"],
                mode=machine_pb2.ApplyConfigurationRequest.NO_REBOOT,
                mode_details="details",
            )
        ]
    ).SerializeToString()
    ((num, wt, item),) = fields(raw)
    assert (num, wt) == (1, LEN)
    f = as_dict(item)  # type: ignore[arg-type]
    md = as_dict(f[1][1])  # type: ignore[arg-type]
    assert md[1] == (LEN, b"cp1") and md[2] == (LEN, b"boom")
    assert as_dict(md[3][1]) == {1: (VARINT, 3), 2: (LEN, b"bad")}  # type: ignore[arg-type]
    assert f[2] == (LEN, b"w1") and f[3] == (VARINT, 2) and f[4] == (LEN, b"details")


def test_bootstrap_upgrade_reboot_etcd_requests() -> None:
    assert as_dict(
        machine_pb2.BootstrapRequest(
            recover_etcd=True, recover_skip_hash_check=True
        ).SerializeToString()
    ) == {1: (VARINT, 1), 2: (VARINT, 1)}
    up = as_dict(
        machine_pb2.UpgradeRequest(
            image="factory.talos.dev/metal-installer/abc:v1.13.9",
            preserve=True,
            stage=True,
            force=True,
            reboot_mode=machine_pb2.UpgradeRequest.POWERCYCLE,
        ).SerializeToString()
    )
    assert up == {
        1: (LEN, b"factory.talos.dev/metal-installer/abc:v1.13.9"),
        2: (VARINT, 1),
        3: (VARINT, 1),
        4: (VARINT, 1),
        5: (VARINT, 1),
    }
    assert as_dict(
        machine_pb2.RebootRequest(mode=machine_pb2.RebootRequest.FORCE).SerializeToString()
    ) == {1: (VARINT, 2)}
    assert as_dict(machine_pb2.EtcdMemberListRequest(query_local=True).SerializeToString()) == {
        1: (VARINT, 1)
    }
    assert as_dict(
        machine_pb2.ReadRequest(path="/proc/sys/kernel/random/boot_id").SerializeToString()
    ) == {1: (LEN, b"/proc/sys/kernel/random/boot_id")}


def test_etcd_member_and_version_fields() -> None:
    m = as_dict(
        machine_pb2.EtcdMember(
            id=0x1234, hostname="cp1", peer_urls=["p"], client_urls=["c"], is_learner=True
        ).SerializeToString()
    )
    assert m == {
        2: (VARINT, 0x1234),
        3: (LEN, b"cp1"),
        4: (LEN, b"p"),
        5: (LEN, b"c"),
        6: (VARINT, 1),
    }
    members = as_dict(
        machine_pb2.EtcdMembers(
            legacy_members=["x"], members=[machine_pb2.EtcdMember(id=1)]
        ).SerializeToString()
    )
    assert members[2] == (LEN, b"x") and members[3][0] == LEN
    v = machine_pb2.Version(
        version=machine_pb2.VersionInfo(
            tag="v1.13.9", sha="s", built="b", go_version="g", os="o", arch="amd64"
        ),
        platform=machine_pb2.PlatformInfo(name="metal", mode="m"),
        features=machine_pb2.FeaturesInfo(rbac=True),
    )
    f = as_dict(v.SerializeToString())
    assert as_dict(f[2][1]) == {
        1: (LEN, b"v1.13.9"),
        2: (LEN, b"s"),
        3: (LEN, b"b"),  # type: ignore[arg-type]
        4: (LEN, b"g"),
        5: (LEN, b"o"),
        6: (LEN, b"amd64"),
    }
    assert as_dict(f[3][1]) == {1: (LEN, b"metal"), 2: (LEN, b"m")}  # type: ignore[arg-type]
    assert as_dict(f[4][1]) == {1: (VARINT, 1)}  # type: ignore[arg-type]


def test_common_data_fields() -> None:
    f = as_dict(
        common_pb2.Data(
            metadata=common_pb2.Metadata(hostname="h"), bytes=b"\x1f\x8b"
        ).SerializeToString()
    )
    assert f[2] == (LEN, b"\x1f\x8b") and as_dict(f[1][1]) == {1: (LEN, b"h")}  # type: ignore[arg-type]


def test_storage_disk_fields() -> None:
    d = storage_pb2.Disk(
        size=480,
        model="m",
        device_name="/dev/sda",
        name="sda",
        serial="s",
        modalias="ma",
        uuid="u",
        wwid="w",
        type=storage_pb2.Disk.NVME,
        bus_path="/pci",
        system_disk=True,
        subsystem="/sys/block",
        readonly=True,
    )
    assert as_dict(d.SerializeToString()) == {
        1: (VARINT, 480),
        2: (LEN, b"m"),
        3: (LEN, b"/dev/sda"),
        4: (LEN, b"sda"),
        5: (LEN, b"s"),
        6: (LEN, b"ma"),
        7: (LEN, b"u"),
        8: (LEN, b"w"),
        9: (VARINT, 3),
        10: (LEN, b"/pci"),
        11: (VARINT, 1),
        12: (LEN, b"/sys/block"),
        13: (VARINT, 1),
    }
    kinds = storage_pb2.Disk.DiskType
    assert [kinds.Value(n) for n in ("UNKNOWN", "SSD", "HDD", "NVME", "SD", "CD")] == list(range(6))
    resp = as_dict(
        storage_pb2.DisksResponse(messages=[storage_pb2.Disks(disks=[d])]).SerializeToString()
    )
    assert resp[1][0] == LEN and as_dict(resp[1][1])[2][0] == LEN  # type: ignore[arg-type]


def test_cosi_fields() -> None:
    get = as_dict(
        cosi_resource_pb2.GetRequest(
            namespace="runtime", type="MachineStatuses.runtime.talos.dev", id="machine"
        ).SerializeToString()
    )
    assert get == {
        1: (LEN, b"runtime"),
        2: (LEN, b"MachineStatuses.runtime.talos.dev"),
        3: (LEN, b"machine"),
    }
    lst = as_dict(
        cosi_resource_pb2.ListRequest(
            namespace="network", type="LinkStatuses.net.talos.dev"
        ).SerializeToString()
    )
    assert lst == {1: (LEN, b"network"), 2: (LEN, b"LinkStatuses.net.talos.dev")}
    res = cosi_resource_pb2.Resource(
        metadata=cosi_resource_pb2.Metadata(
            namespace="n",
            type="t",
            id="i",
            version="7",
            owner="o",
            phase="running",
            finalizers=["f"],
            labels={"k": "v"},
            annotations={"a": "b"},
        ),
        spec=cosi_resource_pb2.Spec(proto_spec=b"\x08\x01", yaml_spec="stage: running\n"),
    )
    r = as_dict(cosi_resource_pb2.GetResponse(resource=res).SerializeToString())
    inner = as_dict(r[1][1])  # type: ignore[arg-type]
    md = as_dict(inner[1][1])  # type: ignore[arg-type]
    assert md[1] == (LEN, b"n") and md[2] == (LEN, b"t") and md[3] == (LEN, b"i")
    assert md[4] == (LEN, b"7") and md[5] == (LEN, b"o") and md[9] == (LEN, b"f")
    assert as_dict(md[10][1]) == {1: (LEN, b"k"), 2: (LEN, b"v")}  # type: ignore[arg-type]
    assert as_dict(md[11][1]) == {1: (LEN, b"a"), 2: (LEN, b"b")}  # type: ignore[arg-type]
    assert as_dict(inner[2][1]) == {1: (LEN, b"\x08\x01"), 2: (LEN, b"stage: running\n")}  # type: ignore[arg-type]
    assert as_dict(cosi_resource_pb2.ListResponse(resource=res).SerializeToString())[1][0] == LEN


def test_decoding_foreign_bytes_built_by_hand() -> None:
    """Bytes built from the reference's numbers (not our encoder) decode into our messages."""

    def tag(num: int, wt: int) -> bytes:
        return bytes([num << 3 | wt])

    raw = tag(1, LEN) + bytes([3]) + b"abc" + tag(4, VARINT) + b"\x01" + tag(5, VARINT) + b"\x01"
    req = machine_pb2.ApplyConfigurationRequest.FromString(raw)
    assert (req.data, req.mode, req.dry_run) == (b"abc", 1, True)
    ver = tag(1, LEN) + bytes([7]) + b"v1.13.9" + tag(6, LEN) + bytes([5]) + b"arm64"
    item = tag(2, LEN) + bytes([len(ver)]) + ver
    resp = machine_pb2.VersionResponse.FromString(tag(1, LEN) + bytes([len(item)]) + item)
    assert resp.messages[0].version.tag == "v1.13.9"
    assert resp.messages[0].version.arch == "arm64"
