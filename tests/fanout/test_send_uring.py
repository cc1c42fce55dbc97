"""The C send loop with and without io_uring: the same results through the ring, through
send() when the kernel refuses the ring (a seccomp filter, as in many containers), when the
module was built without <linux/io_uring.h>, and in a forked child."""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

from tests.sysdeps import debian_binary

try:
    from oddsfeed.fanout import _send
except ImportError:  # pragma: no cover - built by `pip install` where a compiler is
    _send = None  # type: ignore[assignment]

pytestmark = pytest.mark.skipif(_send is None, reason="oddsfeed.fanout._send was not built")

SOURCE = Path(__file__).parents[2] / "oddsfeed" / "fanout" / "_send.c"

# Run in a child process: loads the module from argv[1] (an extension file, or "" for the
# installed one), installs a seccomp filter refusing io_uring_setup with EPERM when argv[2]
# is "seccomp", then sends through the module and prints what happened as JSON.
CHILD = r'''
import ctypes, errno, importlib.machinery, importlib.util, json, os, socket, struct, sys

path, mode = sys.argv[1], sys.argv[2]
if mode == "seccomp":
    libc = ctypes.CDLL(None, use_errno=True)
    def op(code, k, jt=0, jf=0):
        return struct.pack("HBBI", code, jt, jf, k)
    LD, JEQ, RET, ALLOW = 0x20, 0x15, 0x06, 0x7FFF0000
    prog = b"".join([
        op(LD, 4), op(JEQ, 0xC000003E, 1, 0), op(RET, ALLOW),  # x86_64 only
        op(LD, 0), op(JEQ, 425, 0, 1),                          # io_uring_setup
        op(RET, 0x00050000 | errno.EPERM), op(RET, ALLOW)])
    buf = ctypes.create_string_buffer(prog)
    class Prog(ctypes.Structure):
        _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]
    fprog = Prog(len(prog) // 8, ctypes.addressof(buf))
    assert libc.prctl(38, 1, 0, 0, 0) == 0  # PR_SET_NO_NEW_PRIVS
    assert libc.prctl(22, 2, ctypes.byref(fprog), 0, 0) == 0, ctypes.get_errno()
if path:
    loader = importlib.machinery.ExtensionFileLoader("_send", path)
    spec = importlib.util.spec_from_file_location("_send", path, loader=loader)
    mod = importlib.util.module_from_spec(spec)
    loader.exec_module(mod)
else:
    from oddsfeed.fanout import _send as mod

state = mod.uring()
pairs = [socket.socketpair() for _ in range(40)]
gone, peer_gone = socket.socketpair()
peer_gone.close()
full, peer_full = socket.socketpair()
full.setblocking(False)
try:
    while True:
        full.send(b"x" * 4096)
except BlockingIOError:
    pass
fds = [a.fileno() for a, _ in pairs] + [gone.fileno(), full.fileno()]
short_all = dict(mod.send_all(fds, b"\x82\x05hello"))
got_all = sum(b.recv(100) == b"\x82\x05hello" for _, b in pairs)
frames = [b"\x82\x01" + bytes([65 + i % 26]) for i in range(len(fds))]
short_each = dict(mod.send_each(fds, frames))
got_each = sum(b.recv(100) == frames[i] for i, (_, b) in enumerate(pairs))
forked = None
if mode == "fork":
    pid = os.fork()
    if pid == 0:
        ok = (mod.uring() == "on" and mod.send_all(fds[:40], b"\x82\x02hi") == []
              and all(b.recv(100) == b"\x82\x02hi" for _, b in pairs))
        os._exit(0 if ok else 1)
    forked = os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])
    parent_again = mod.send_all(fds[:40], b"\x82\x02ok") == [] and all(
        b.recv(100) == b"\x82\x02ok" for _, b in pairs)
    forked = forked if parent_again else "parent failed after fork"
print(json.dumps({
    "state": state, "got_all": got_all, "got_each": got_each, "forked": forked,
    "short_all": {str(k): v for k, v in short_all.items()},
    "short_each": {str(k): v for k, v in short_each.items()},
}))
'''


def run_child(path: str, mode: str) -> dict[str, object]:
    """What the child reports after its sends (``path``: the module to load, "" for the
    installed one)."""
    proc = subprocess.run([sys.executable, "-c", CHILD, path, mode], capture_output=True,
                          text=True, timeout=60, check=False)
    assert proc.returncode == 0, proc.stderr
    out: dict[str, object] = json.loads(proc.stdout)
    return out


def assert_same_sends(out: dict[str, object]) -> None:
    """40 sockets took their frame from each call; the gone peer failed with EPIPE and the
    full socket with EAGAIN (or took a part), in either call."""
    assert out["got_all"] == 40
    assert out["got_each"] == 40
    for key in ("short_all", "short_each"):
        short = out[key]
        assert isinstance(short, dict)
        assert sorted(short) == ["40", "41"], short
        assert short["40"] == -32  # EPIPE
        assert short["41"] == -11 or 0 <= short["41"] < 3  # EAGAIN, or a part of the frame


def test_sends_go_through_io_uring_where_the_kernel_allows_it() -> None:
    """On this machine the ring is on, and a call's sends report exactly what send() would."""
    out = run_child("", "plain")
    if out["state"] != "on":
        pytest.skip(f"io_uring is not available here: {out['state']}")
    assert_same_sends(out)


def test_a_refused_io_uring_setup_falls_back_to_send() -> None:
    """Under a seccomp filter refusing io_uring_setup (EPERM) the ring is off and every send
    goes by send(), with the same results."""
    if platform.machine() != "x86_64":
        pytest.skip("the seccomp filter of this test knows x86_64's system call numbers")
    out = run_child("", "seccomp")
    assert out["state"] == "off: Operation not permitted"
    assert_same_sends(out)


def test_a_build_without_io_uring_sends_by_send(tmp_path: Path) -> None:
    """_send.c compiled as where <linux/io_uring.h> is missing (ODDSFEED_NO_URING) reports
    the ring off and sends the same."""
    cc = debian_binary("/usr/bin/gcc", "gcc")
    ext = tmp_path / ("_send" + (sysconfig.get_config_var("EXT_SUFFIX") or ".so"))
    subprocess.run([cc, "-shared", "-fPIC", "-O1", "-DODDSFEED_NO_URING",
                    f"-I{sysconfig.get_paths()['include']}", str(SOURCE), "-o", str(ext)],
                   check=True, capture_output=True, timeout=120)
    out = run_child(str(ext), "plain")
    assert out["state"] == "off: not built with io_uring"
    assert_same_sends(out)


def test_a_forked_child_sets_up_its_own_ring() -> None:
    """After fork the child sends through a ring of its own and the parent's keeps working."""
    out = run_child("", "fork")
    if out["state"] != "on":
        pytest.skip(f"io_uring is not available here: {out['state']}")
    assert out["forked"] == 0


def test_uring_false_turns_the_ring_off_for_the_process() -> None:
    """uring(False) is final: the state reads disabled and sends still go out."""
    proc = subprocess.run(
        [sys.executable, "-c",
         "import socket; from oddsfeed.fanout import _send as m; m.uring(); "
         "print(m.uring(False)); ps = [socket.socketpair() for _ in range(8)]; "
         "print(m.send_all([a.fileno() for a, _ in ps], b'x'), m.uring())"],
        capture_output=True, text=True, timeout=60, check=True)
    assert proc.stdout.split("\n")[:2] == ["off: disabled", "[] off: disabled"]


def test_the_environment_can_keep_the_ring_off() -> None:
    """ODDSFEED_SEND_URING=0 turns the ring off when the writer is imported."""
    proc = subprocess.run(
        [sys.executable, "-c", "from oddsfeed.fanout import writer; print(writer.uring())"],
        capture_output=True, text=True, timeout=60, check=True,
        env={**os.environ, "ODDSFEED_SEND_URING": "0"})
    assert proc.stdout.strip() == "off: disabled"
