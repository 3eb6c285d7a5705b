"""Hosts as Linux network namespaces, joined by veth pairs to a bridge that
lives in a namespace of its own, and the faults of a real network between
them (nftables drops, random loss).

Addresses are in 10.231.0.0/24, which exists only inside these namespaces:
no namespace has a default route, none is joined to the machine's own
network, nothing is NATed, so no packet can leave. Names carry the test
run's pid (`mrg<pid>-web`, ...) so concurrent runs never collide, and a run
killed before its teardown is swept by the next one.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import re
import shutil
import signal
import subprocess
from concurrent.futures import ThreadPoolExecutor

SUBNET = "10.231.0"
HOSTS = {"db": 10, "web": 20, "ingest": 30, "embed-a": 41, "embed-b": 42, "client": 50}
# A second address of `db`, where the delaying relay listens (relay.py).
DB_RELAY_ADDRESS = f"{SUBNET}.11"
PREFIX_PATTERN = re.compile(r"^mrg(\d+)-")
CLONE_NEWNET = 0x40000000


def address(host: str) -> str:
    return f"{SUBNET}.{HOSTS[host]}"


def why_not_available() -> str | None:
    """The reason the multi-host suite cannot run here, or None."""
    if os.geteuid() != 0:
        return "multi-host tests build network namespaces and need root (run as root, e.g. in CI)"
    for tool, package in (("ip", "iproute2"), ("nft", "nftables"), ("redis-server", "redis-server")):
        if shutil.which(tool) is None:
            return f"multi-host tests need `{tool}` (apt-get install {package}; `make test` installs it as root)"
    return None


def run(*command: str, check: bool = True) -> subprocess.CompletedProcess:
    result = subprocess.run(command, capture_output=True, text=True, timeout=60)
    if check and result.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed: {result.stderr.strip()}")
    return result


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def kill_namespace_processes(namespace: str) -> None:
    pids = run("ip", "netns", "pids", namespace, check=False).stdout.split()
    for pid in pids:
        if pid == str(os.getpid()):
            continue  # the test process, had its main thread entered a namespace
        with contextlib.suppress(ProcessLookupError, ValueError):
            os.kill(int(pid), signal.SIGKILL)


def sweep_abandoned() -> list[str]:
    """Delete namespaces left by runs whose process is gone (killed -9)."""
    swept = []
    for line in run("ip", "netns", "list", check=False).stdout.splitlines():
        name = line.split()[0] if line.strip() else ""
        match = PREFIX_PATTERN.match(name)
        if match and not _pid_alive(int(match.group(1))):
            kill_namespace_processes(name)
            run("ip", "netns", "del", name, check=False)
            swept.append(name)
    return swept


class Network:
    def __init__(self, prefix: str | None = None) -> None:
        self.prefix = prefix or f"mrg{os.getpid()}"
        self.created: list[str] = []
        self._clients: dict[str, ThreadPoolExecutor] = {}

    def namespace(self, host: str) -> str:
        return f"{self.prefix}-{host}"

    @property
    def switch(self) -> str:
        return f"{self.prefix}-switch"

    def build(self) -> None:
        sweep_abandoned()
        self._add_namespace(self.switch)
        run("ip", "-n", self.switch, "link", "add", "br0", "type", "bridge")
        run("ip", "-n", self.switch, "link", "set", "br0", "up")
        for host in HOSTS:
            namespace = self.namespace(host)
            self._add_namespace(namespace)
            # The veth pair is made in the switch namespace, its far end
            # moved straight into the host's: no interface ever appears in
            # the machine's own namespace.
            run(
                "ip", "-n", self.switch, "link", "add", host, "type", "veth", "peer", "name", "eth0", "netns", namespace
            )
            run("ip", "-n", self.switch, "link", "set", host, "master", "br0", "up")
            run("ip", "-n", namespace, "addr", "add", f"{address(host)}/24", "dev", "eth0")
            run("ip", "-n", namespace, "link", "set", "eth0", "up")
            run("ip", "-n", namespace, "link", "set", "lo", "up")
        run("ip", "-n", self.namespace("db"), "addr", "add", f"{DB_RELAY_ADDRESS}/24", "dev", "eth0")

    def _add_namespace(self, name: str) -> None:
        run("ip", "netns", "add", name)
        self.created.append(name)

    def routes(self, host: str) -> str:
        return run("ip", "-n", self.namespace(host), "route", "show").stdout

    def teardown(self) -> None:
        for executor in self._clients.values():
            executor.shutdown(wait=True, cancel_futures=True)
        self._clients.clear()
        for name in reversed(self.created):
            kill_namespace_processes(name)
            run("ip", "netns", "del", name, check=False)
        self.created.clear()

    # --- Running code of the test process inside a host ---------------------------

    def call_in(self, host: str, function, *args, **kwargs):
        """Run `function` on a thread that lives in `host`'s namespace: the
        sockets it opens belong to that host. One thread per host."""
        if host not in self._clients:
            self._clients[host] = ThreadPoolExecutor(
                max_workers=1,
                thread_name_prefix=f"in-{host}",
                initializer=_enter_namespace,
                initargs=(self.namespace(host),),
            )
        return self._clients[host].submit(function, *args, **kwargs).result()

    def exec_prefix(self, host: str) -> list[str]:
        return ["ip", "netns", "exec", self.namespace(host)]

    # --- Faults ------------------------------------------------------------------------

    def nft(self, host: str, ruleset: str) -> None:
        subprocess.run(
            ["ip", "netns", "exec", self.namespace(host), "nft", "-f", "-"],
            input=ruleset,
            text=True,
            check=True,
            capture_output=True,
            timeout=30,
        )

    def cut(self, host: str, peer: str = "db", *, port: int | None = None) -> None:
        """Drop every packet between `host` and `peer` (or only those of one
        TCP port of the peer) silently, as a failed link or switch does:
        open connections hang rather than close."""
        addresses = f"{{ {address(peer)}, {DB_RELAY_ADDRESS} }}" if peer == "db" else address(peer)
        out_port = f" tcp dport {port}" if port else ""
        in_port = f" tcp sport {port}" if port else ""
        self.nft(
            host,
            f"""
table inet mrgcut {{
  chain out {{ type filter hook output priority 0; policy accept; ip daddr {addresses}{out_port} counter drop; }}
  chain in {{ type filter hook input priority 0; policy accept; ip saddr {addresses}{in_port} counter drop; }}
}}
""",
        )

    def heal(self, host: str) -> None:
        run("ip", "netns", "exec", self.namespace(host), "nft", "delete", "table", "inet", "mrgcut")

    def lose(self, host: str, percent: int, peer: str = "db") -> None:
        """Drop `percent` % of the packets between `host` and `peer`, each
        way, at random."""
        addresses = f"{{ {address(peer)}, {DB_RELAY_ADDRESS} }}" if peer == "db" else address(peer)
        self.nft(
            host,
            f"""
table inet mrgloss {{
  chain out {{ type filter hook output priority 0; policy accept; ip daddr {addresses} numgen random mod 100 < {percent} counter drop; }}
  chain in {{ type filter hook input priority 0; policy accept; ip saddr {addresses} numgen random mod 100 < {percent} counter drop; }}
}}
""",
        )

    def stop_losing(self, host: str) -> None:
        run("ip", "netns", "exec", self.namespace(host), "nft", "delete", "table", "inet", "mrgloss")

    def clear_faults(self) -> None:
        for host in HOSTS:
            for table in ("mrgcut", "mrgloss"):
                run("ip", "netns", "exec", self.namespace(host), "nft", "delete", "table", "inet", table, check=False)

    def dropped_packets(self, host: str, table: str) -> int:
        """Packets the host's fault rules dropped so far (proof they acted)."""
        listing = run(
            "ip", "netns", "exec", self.namespace(host), "nft", "-a", "list", "table", "inet", table, check=False
        ).stdout
        return sum(int(n) for n in re.findall(r"counter packets (\d+)", listing))


def _enter_namespace(namespace: str) -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    descriptor = os.open(f"/run/netns/{namespace}", os.O_RDONLY)
    try:
        if libc.setns(descriptor, CLONE_NEWNET) != 0:
            errno = ctypes.get_errno()
            raise OSError(errno, f"setns into {namespace}: {os.strerror(errno)}")
    finally:
        os.close(descriptor)
