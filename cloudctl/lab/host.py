"""The lab's effects on the host: namespace, bridge, a private libvirtd, disks, domains and the
BMC emulators (sushy-tools, virtualbmc). Every step first looks whether its result is there
already, so ``up`` converges and a second run changes nothing; ``down`` removes what ``up``
made, from any partial state.

Processes started here (libvirtd, one sushy-emulator per Redfish node, one vbmcd) run in the
lab's network namespace, in their own session; their pids are in ``<lab dir>/pids/``.
"""

from __future__ import annotations

import contextlib
import datetime
import ipaddress
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..errors import EnvironmentNotReady, Timeout
from ..power.secret import resolve_password
from . import netns
from .spec import OVMF_CODE, OVMF_VARS, LabSpec, VmSpec, domain_xml

Notify = Callable[[str], None]
LIBVIRT_DIRS = ("/run/libvirt", "/var/lib/libvirt", "/etc/libvirt", "/var/log/libvirt",
                "/var/cache/libvirt")
DAEMON_WAIT = 60.0
EMULATOR_WAIT = 30.0


def _run(argv: list[str], what: str, *, check: bool = True) -> subprocess.CompletedProcess[str]:
    try:
        res = subprocess.run(argv, capture_output=True, text=True, timeout=60)
    except FileNotFoundError:
        raise EnvironmentNotReady(f"{what}: {argv[0]} is not installed") from None
    if check and res.returncode != 0:
        raise EnvironmentNotReady(f"{what}: {' '.join(argv)} failed: {res.stderr.strip()[-300:]}")
    return res


def _write(path: Path, text: str, mode: int = 0o644) -> bool:
    """Write ``text`` unless it is there already; True when something changed."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.exists() and path.read_text() == text:
        if (path.stat().st_mode & 0o777) != mode:
            path.chmod(mode)
        return False
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "w") as f:
        f.write(text)
    path.chmod(mode)
    return True


# --------------------------------------------------------------------------- processes


def _pidfile(spec: LabSpec, name: str) -> Path:
    return spec.lab_dir / "pids" / f"{name}.pid"


def alive(spec: LabSpec, name: str) -> int | None:
    """The pid of the lab process ``name`` when it runs (and is ours: its command line names
    the lab directory), else None."""
    try:
        pid = int(_pidfile(spec, name).read_text())
    except (OSError, ValueError):
        return None
    return pid if not _zombie(pid) and _names_lab(pid, spec) else None


def _names_lab(pid: int, spec: LabSpec) -> bool:
    """Whether the process's command line or environment names the lab directory."""
    marker = str(spec.lab_dir).encode()
    for part in ("cmdline", "environ"):
        try:
            if marker in Path(f"/proc/{pid}/{part}").read_bytes():
                return True
        except OSError:
            return False
    return False


def _spawn(spec: LabSpec, name: str, argv: list[str], env: dict[str, str] | None = None) -> int:
    logs = spec.lab_dir / "log"
    logs.mkdir(parents=True, exist_ok=True)
    with open(logs / f"{name}.log", "ab") as log:
        proc = subprocess.Popen(
            ["ip", "netns", "exec", spec.netns, *argv], stdin=subprocess.DEVNULL, stdout=log,
            stderr=subprocess.STDOUT, start_new_session=True, env={**os.environ, **(env or {})})
    _pidfile(spec, name).parent.mkdir(parents=True, exist_ok=True)
    _pidfile(spec, name).write_text(f"{proc.pid}\n")
    return proc.pid


def _stop(spec: LabSpec, name: str) -> bool:
    pid = alive(spec, name)
    _pidfile(spec, name).unlink(missing_ok=True)
    if pid is None:
        return False
    _kill_group(pid)
    return True


def _kill_group(pid: int) -> None:
    for sig, wait in ((signal.SIGTERM, 10.0), (signal.SIGKILL, 5.0)):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pid, sig)
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            with contextlib.suppress(ChildProcessError):
                os.waitpid(pid, os.WNOHANG)
            if not Path(f"/proc/{pid}").exists() or _zombie(pid):
                return
            time.sleep(0.1)


def _zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[-1].split()[0] == "Z"
    except OSError:
        return True


def lab_processes(spec: LabSpec) -> list[tuple[int, str]]:
    """Every live process whose command line or environment names the lab directory (QEMU,
    the emulators and their children)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        pid = int(entry.name)
        if _names_lab(pid, spec) and not _zombie(pid):
            try:
                cmd = (entry / "cmdline").read_bytes()
            except OSError:
                continue
            found.append((pid, cmd.replace(b"\0", b" ").decode(errors="replace")))
    return found


def claim(spec: LabSpec) -> None:
    """Record this lab directory as the owner of the cluster's lab on this host; refuse when
    another lab directory owns it (names, namespace and sockets derive from the cluster)."""
    owner = spec.run_dir / "owner"
    try:
        other = Path(owner.read_text().strip())
    except OSError:
        other = None
    if other is not None and other != spec.lab_dir and other.exists():
        raise EnvironmentNotReady(
            f"a lab for cluster {spec.cluster} already runs from {other} (namespace "
            f"{spec.netns}); remove it first (`cloudctl lab down` with that inventory and "
            "--cluster-dir)")
    spec.lab_dir.mkdir(parents=True, exist_ok=True)
    spec.run_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    _write(owner, f"{spec.lab_dir}\n", 0o600)


# --------------------------------------------------------------------------- network


def ensure_network(spec: LabSpec, notify: Notify) -> bool:
    changed = False
    ns = spec.netns
    if not netns.exists(ns):
        _run(["ip", "netns", "add", ns], "lab namespace")
        notify(f"created network namespace {ns}")
        changed = True
    ip = ["ip", "-n", ns]
    _run([*ip, "link", "set", "lo", "up"], "lab namespace loopback")
    if _run([*ip, "link", "show", spec.bridge], "lab bridge", check=False).returncode != 0:
        _run([*ip, "link", "add", "name", spec.bridge, "type", "bridge", "forward_delay", "0",
              "stp_state", "0"], "lab bridge")
        notify(f"created bridge {spec.bridge} ({spec.bridge_cidr}) in {ns}")
        changed = True
    if spec.bridge_cidr not in _run([*ip, "-o", "addr", "show", "dev", spec.bridge],
                                    "lab bridge").stdout:
        _run([*ip, "addr", "add", spec.bridge_cidr, "dev", spec.bridge], "lab bridge address")
        changed = True
    _run([*ip, "link", "set", spec.bridge, "up"], "lab bridge")
    if spec.bmc_addresses:  # the BMC emulators listen on the inventory's BMC addresses
        have = _run([*ip, "-o", "addr", "show", "dev", "lo"], "lab BMC addresses").stdout
        for addr in spec.bmc_addresses:
            if f" {addr}/32 " not in have:
                _run([*ip, "addr", "add", f"{addr}/32", "dev", "lo"], "lab BMC address")
                changed = True
    return changed


# --------------------------------------------------------------------------- libvirtd


def _libvirt_root(spec: LabSpec) -> Path:
    return spec.lab_dir / "libvirt"


def _libvirt_config(spec: LabSpec) -> dict[str, str]:
    root = _libvirt_root(spec)
    return {
        "libvirtd.conf": (
            f'unix_sock_dir = "{spec.run_dir}"\n'
            'unix_sock_rw_perms = "0700"\nunix_sock_ro_perms = "0700"\n'
            'auth_unix_rw = "none"\nauth_unix_ro = "none"\n'
            f'log_outputs = "3:file:{spec.lab_dir}/log/libvirtd-daemon.log"\n'
        ),
        # private daemon: QEMU as root (lab files may sit in 0700 directories), console
        # output straight into files (no virtlogd), no cgroups or namespaces (no systemd here)
        "qemu.conf": (
            'user = "root"\ngroup = "root"\ndynamic_ownership = 0\nremember_owner = 0\n'
            'security_driver = "none"\nstdio_handler = "file"\ncgroup_controllers = [ ]\n'
            "namespaces = [ ]\n"
            f'nvram = [ "{OVMF_CODE}:{OVMF_VARS}" ]\n'
            f'# lab {root}\n'
        ),
    }


def connect(spec: LabSpec) -> Any:
    import libvirt

    libvirt.registerErrorHandler(lambda _ctx, _err: None, None)
    return libvirt.open(spec.libvirt_uri)


def ensure_libvirtd(spec: LabSpec, notify: Notify) -> tuple[Any, bool]:
    import libvirt

    root = _libvirt_root(spec)
    for name, text in _libvirt_config(spec).items():
        _write(root / "etc" / name, text)
    if alive(spec, "libvirtd") is not None:
        return connect(spec), False
    spec.run_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    binds = []
    for target in LIBVIRT_DIRS:
        src = root / target.strip("/").replace("/", "-")
        src.mkdir(parents=True, exist_ok=True)
        binds.append(f"mkdir -p {target} && mount --bind {src} {target}")
    for name in _libvirt_config(spec):
        binds.append(f"cp {root / 'etc' / name} /etc/libvirt/{name}")
    script = " && ".join([*binds, f"exec libvirtd --pid-file {root}/libvirtd.pid"])
    if shutil.which("libvirtd") is None:
        raise EnvironmentNotReady("libvirtd is not installed (Debian: libvirt-daemon-system)")
    _spawn(spec, "libvirtd", ["unshare", "--mount", "--propagation", "private", "sh", "-c",
                              script])
    notify(f"started libvirtd in {spec.netns}; waiting up to {DAEMON_WAIT:.0f}s for it to "
           "answer (it probes QEMU first)")
    deadline = time.monotonic() + DAEMON_WAIT
    while True:
        if alive(spec, "libvirtd") is None:
            raise EnvironmentNotReady(
                f"libvirtd exited at start: {_tail(spec.lab_dir / 'log' / 'libvirtd.log')}")
        try:
            return connect(spec), True
        except libvirt.libvirtError:
            if time.monotonic() > deadline:
                raise Timeout(f"libvirtd of lab {spec.cluster} did not answer on "
                              f"{spec.libvirt_uri} within {DAEMON_WAIT:.0f}s") from None
            time.sleep(0.5)


def _tail(path: Path, n: int = 400) -> str:
    try:
        return path.read_text(errors="replace")[-n:].strip()
    except OSError:
        return "(no log)"


# --------------------------------------------------------------------------- disks, domains


def ensure_disks(spec: LabSpec, vm: VmSpec, notify: Notify) -> bool:
    changed = False
    for path, gib in ((vm.system_disk, vm.system_disk_gib), (vm.data_disk, vm.data_disk_gib)):
        if path.exists():
            continue
        path.parent.mkdir(parents=True, exist_ok=True)
        _run(["qemu-img", "create", "-q", "-f", "qcow2", str(path), f"{gib}G"], f"disk {path}")
        notify(f"{vm.node}: created {path.name} ({gib} GiB)")
        changed = True
    vm.console_log.parent.mkdir(parents=True, exist_ok=True)
    if vm.nvram is not None:
        vm.nvram.parent.mkdir(parents=True, exist_ok=True)
    return changed


def ensure_domain(conn: Any, spec: LabSpec, vm: VmSpec, notify: Notify) -> bool:
    import libvirt

    try:
        conn.lookupByUUIDString(vm.uuid)
        return False  # defined already: the BMC may have changed its boot order; keep it
    except libvirt.libvirtError:
        pass
    conn.defineXML(domain_xml(spec, vm))
    notify(f"{vm.node}: defined domain {vm.domain} ({vm.firmware}, {spec.accel}, "
           f"{len(vm.macs)} NIC(s), uuid {vm.uuid})")
    return True


def domain_state(conn: Any, vm: VmSpec) -> str:
    import libvirt

    try:
        dom = conn.lookupByUUIDString(vm.uuid)
    except libvirt.libvirtError:
        return "undefined"
    state = dom.state()[0]
    return {
        libvirt.VIR_DOMAIN_RUNNING: "on", libvirt.VIR_DOMAIN_SHUTOFF: "off",
        libvirt.VIR_DOMAIN_PAUSED: "paused", libvirt.VIR_DOMAIN_SHUTDOWN: "shutting down",
        libvirt.VIR_DOMAIN_CRASHED: "crashed", libvirt.VIR_DOMAIN_BLOCKED: "on",
    }.get(state, f"state {state}")


# --------------------------------------------------------------------------- BMC emulators


def _bmc_dir(spec: LabSpec) -> Path:
    return spec.lab_dir / "bmc"


def ensure_certificate(spec: LabSpec) -> bool:
    """A self-signed certificate for every Redfish BMC address of the lab."""
    addrs = sorted({vm.bmc.address for vm in spec.vms if vm.bmc and vm.bmc.type == "redfish"})
    key_path = _bmc_dir(spec) / "redfish-key.pem"
    stamp = _bmc_dir(spec) / "redfish-cert.addresses"
    if not addrs or (spec.ca_cert.exists() and key_path.exists() and stamp.exists()
                     and stamp.read_text() == " ".join(addrs)):
        return False
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"cloudctl lab {spec.cluster} BMC")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name)
        .public_key(key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=3650))
        .add_extension(x509.SubjectAlternativeName(
            [x509.IPAddress(ipaddress.IPv4Address(a)) for a in addrs]), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    _write(key_path, key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption()).decode(), 0o600)
    _write(spec.ca_cert, cert.public_bytes(serialization.Encoding.PEM).decode())
    _write(stamp, " ".join(addrs))
    return True


def _htpasswd(path: Path, username: str, password: str) -> bool:
    """A bcrypt htpasswd (0600); rewritten only when the password changed."""
    import bcrypt

    if path.exists():
        user, _, digest = path.read_text().strip().partition(":")
        if user == username and digest and bcrypt.checkpw(password.encode(), digest.encode()):
            return False
    digest = bcrypt.hashpw(password.encode(), bcrypt.gensalt(rounds=10)).decode()
    return _write(path, f"{username}:{digest}\n", 0o600)


def ensure_redfish(spec: LabSpec, vm: VmSpec, password: str, notify: Notify) -> bool:
    assert vm.bmc is not None
    d = _bmc_dir(spec) / vm.node
    d.mkdir(parents=True, exist_ok=True, mode=0o700)
    changed = _htpasswd(d / "htpasswd", vm.bmc.username, password)
    conf = (
        f"SUSHY_EMULATOR_LISTEN_IP = {vm.bmc.address!r}\n"
        f"SUSHY_EMULATOR_LISTEN_PORT = {vm.bmc.port}\n"
        f"SUSHY_EMULATOR_SSL_CERT = {str(spec.ca_cert)!r}\n"
        f"SUSHY_EMULATOR_SSL_KEY = {str(_bmc_dir(spec) / 'redfish-key.pem')!r}\n"
        f"SUSHY_EMULATOR_AUTH_FILE = {str(d / 'htpasswd')!r}\n"
        f"SUSHY_EMULATOR_LIBVIRT_URI = {spec.libvirt_uri!r}\n"
        f"SUSHY_EMULATOR_ALLOWED_INSTANCES = [{vm.uuid!r}]\n"
        f"SUSHY_EMULATOR_STATE_DIR = {str(d / 'state')!r}\n"
        "SUSHY_EMULATOR_BOOT_LOADER_MAP = {'UEFI': {'x86_64': "
        f"{str(OVMF_CODE)!r}}}, 'Legacy': {{'x86_64': None}}}}\n"
        f"SUSHY_EMULATOR_SECURE_BOOT_DISABLED_NVRAM = {str(OVMF_VARS)!r}\n"
    )
    changed |= _write(d / "emulator.conf", conf)
    name = f"sushy-{vm.node}"
    if changed:
        _stop(spec, name)
    if alive(spec, name) is None:
        _spawn(spec, name, [sys.executable, "-m", "sushy_tools.emulator.main", "--config",
                            str(d / "emulator.conf")])
        notify(f"{vm.node}: started sushy-tools Redfish emulator on {vm.bmc.endpoint}")
        changed = True
    return changed


def _vbmc_conf(spec: LabSpec) -> Path:
    return _bmc_dir(spec) / "vbmc" / "virtualbmc.conf"


def ensure_vbmc(spec: LabSpec, passwords: dict[str, str], notify: Notify) -> bool:
    vms = [vm for vm in spec.vms if vm.bmc and vm.bmc.type == "ipmi"]
    if not vms:
        return False
    root = _bmc_dir(spec) / "vbmc"
    (root / "domains").mkdir(parents=True, exist_ok=True, mode=0o700)
    changed = _write(_vbmc_conf(spec), (
        f"[default]\nconfig_dir = {root / 'domains'}\npid_file = {root / 'master.pid'}\n"
        "server_port = 50891\nshow_passwords = false\n"
        f"[log]\nlogfile = {spec.lab_dir / 'log' / 'vbmc-instances.log'}\n"
    ))
    for vm in vms:
        assert vm.bmc is not None
        changed |= _write(root / "domains" / vm.domain / "config", (
            "[VirtualBMC]\n"
            f"username = {vm.bmc.username}\npassword = {passwords[vm.node]}\n"
            f"address = {vm.bmc.address}\nport = {vm.bmc.port}\ndomain_name = {vm.domain}\n"
            f"libvirt_uri = {spec.libvirt_uri}\nactive = True\n"
        ), 0o600)
    if changed:
        _stop(spec, "vbmcd")
        (root / "master.pid").unlink(missing_ok=True)
    if alive(spec, "vbmcd") is None:
        (root / "master.pid").unlink(missing_ok=True)
        _spawn(spec, "vbmcd", [sys.executable, "-m", "virtualbmc.cmd.vbmcd", "--foreground"],
               env={"VIRTUALBMC_CONFIG": str(_vbmc_conf(spec))})
        notify("started virtualbmc (vbmcd) for " + ", ".join(
            f"{vm.node} on {vm.bmc.endpoint}" for vm in vms if vm.bmc))
        changed = True
    return changed


def listening(spec: LabSpec) -> set[str]:
    """``tcp/ADDR:PORT`` and ``udp/ADDR:PORT`` sockets listening in the lab namespace."""
    out = set()
    for proto, flag in (("tcp", "-Hltn"), ("udp", "-Hlun")):
        res = _run(["ip", "netns", "exec", spec.netns, "ss", flag], "lab sockets", check=False)
        for line in res.stdout.splitlines():
            parts = line.split()
            if len(parts) >= 4:
                out.add(f"{proto}/{parts[3]}")
    return out


def wait_emulators(spec: LabSpec, notify: Notify) -> None:
    want = {
        f"{'tcp' if vm.bmc.type == 'redfish' else 'udp'}/{vm.bmc.address}:{vm.bmc.port}": vm
        for vm in spec.vms if vm.bmc is not None
    }
    if not want:
        return
    deadline = time.monotonic() + EMULATOR_WAIT
    missing = set(want) - listening(spec)
    if missing:
        notify(f"waiting up to {EMULATOR_WAIT:.0f}s for the BMC emulators to listen on "
               + ", ".join(sorted(m.split('/', 1)[1] for m in missing)))
    while missing:
        if time.monotonic() > deadline:
            vm = want[sorted(missing)[0]]
            assert vm.bmc is not None
            log = f"sushy-{vm.node}" if vm.bmc.type == "redfish" else "vbmcd"
            raise Timeout(
                f"node {vm.node}: the {vm.bmc.type} emulator does not listen on "
                f"{vm.bmc.address}:{vm.bmc.port} after {EMULATOR_WAIT:.0f}s: "
                f"{_tail(spec.lab_dir / 'log' / f'{log}.log')}")
        time.sleep(0.3)
        missing = set(want) - listening(spec)


def passwords(spec: LabSpec) -> dict[str, str]:
    return {vm.node: resolve_password(vm.node, vm.bmc.password_ref)
            for vm in spec.vms if vm.bmc is not None}


# --------------------------------------------------------------------------- teardown


def teardown(spec: LabSpec, notify: Notify) -> list[str]:
    """Remove everything ``up`` made; returns what was removed."""
    removed: list[str] = []
    if alive(spec, "libvirtd") is not None:
        import libvirt

        try:
            conn = connect(spec)
        except libvirt.libvirtError:
            conn = None
        if conn is not None:
            for dom in conn.listAllDomains():
                if dom.isActive():
                    dom.destroy()
                dom.undefineFlags(libvirt.VIR_DOMAIN_UNDEFINE_NVRAM
                                  | libvirt.VIR_DOMAIN_UNDEFINE_MANAGED_SAVE)
                removed.append(f"domain {dom.name()}")
            conn.close()
    for vm in spec.vms:
        if _stop(spec, f"sushy-{vm.node}"):
            removed.append(f"Redfish emulator of {vm.node}")
    if _stop(spec, "vbmcd"):
        removed.append("virtualbmc")
    if _stop(spec, "libvirtd"):
        removed.append("libvirtd")
    for pid, cmd in lab_processes(spec):  # QEMU left by a daemon that died, anything else
        _kill_group_or_pid(pid)
        removed.append(f"process {pid} ({cmd[:60]})")
    if netns.exists(spec.netns):
        _run(["ip", "netns", "del", spec.netns], "lab namespace")
        removed.append(f"network namespace {spec.netns} (bridge {spec.bridge}, taps)")
    if spec.lab_dir.exists():
        shutil.rmtree(spec.lab_dir)
        removed.append(f"{spec.lab_dir} (disks, NVRAM, console logs, emulator config)")
    if spec.run_dir.exists():
        shutil.rmtree(spec.run_dir)
    with contextlib.suppress(OSError):
        spec.run_dir.parent.rmdir()  # only when no other lab uses it
    for r in removed:
        notify(f"removed {r}")
    return removed


def _kill_group_or_pid(pid: int) -> None:
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and Path(f"/proc/{pid}").exists() and not _zombie(pid):
        time.sleep(0.1)
