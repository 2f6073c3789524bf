"""What the tool touches: no unpickling, no network, and deterministic theory output.

A scan of the source tree (src/) asserts that every ``np.load`` passes
``allow_pickle=False``, every ``torch.load`` passes ``weights_only=True``, nothing calls
pickle / marshal / shelve, and no module imports a network library (the one ``socket``
import only asks for the host name). Then: the theory commands give byte-identical
stdout, JSON and saved files when run twice.
"""

from __future__ import annotations

import ast
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

SRC = Path(__file__).resolve().parents[1] / "src"
FILES = sorted(SRC.rglob("*.py"))

NETWORK_MODULES = {"socket", "urllib", "urllib3", "requests", "http", "httpx", "aiohttp",
                   "ftplib", "smtplib", "telnetlib", "xmlrpc", "websocket", "paramiko"}
PICKLE_MODULES = {"pickle", "cPickle", "dill", "cloudpickle", "marshal", "shelve", "joblib"}
# module (relative to src/) -> network modules it may import, and why
NETWORK_ALLOWED = {
    "postcollapse/scale/cells.py": {"socket"},  # socket.gethostname() for the cell's report
}
# attribute uses of an allowed network module: only these
SOCKET_CALLS_ALLOWED = {"gethostname"}


def _rel(p: Path) -> str:
    return p.relative_to(SRC).as_posix()


def _calls(tree, attr_owner: set[str], attr: str):
    """Calls ``X.attr(...)`` with X a name in ``attr_owner`` (np, numpy, torch)."""
    for node in ast.walk(tree):
        if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
                and node.func.attr == attr and isinstance(node.func.value, ast.Name)
                and node.func.value.id in attr_owner):
            yield node


def _kw(call: ast.Call, name: str):
    for k in call.keywords:
        if k.arg == name:
            return k.value
    return None


def _trees():
    for p in FILES:
        yield p, ast.parse(p.read_text(), filename=str(p))


def test_scan_finds_the_source():
    assert len(FILES) > 30 and (SRC / "postcollapse" / "data" / "files.py").exists()


@pytest.mark.parametrize("path", FILES, ids=_rel)
def test_np_load_never_allows_pickle(path):
    tree = ast.parse(path.read_text())
    for call in _calls(tree, {"np", "numpy"}, "load"):
        v = _kw(call, "allow_pickle")
        assert isinstance(v, ast.Constant) and v.value is False, (
            f"{_rel(path)}:{call.lineno}: np.load without allow_pickle=False")
    # no aliasing around the rule (from numpy import load; np.lib.format.read_array(...))
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module in ("numpy", "numpy.lib.format"):
            names = {a.name for a in node.names}
            assert not names & {"load", "read_array"}, f"{_rel(path)}:{node.lineno}"


def _weights_only_pending(p: Path) -> bool:
    """train/ loads its own checkpoints with weights_only=False for now (being rewritten in
    parallel); those checkpoints hold only tensors and plain values, so weights_only=True
    works there. Strict xfail: once switched, the mark must go."""
    return _rel(p).startswith("postcollapse/train/") and "weights_only=False" in p.read_text()


@pytest.mark.parametrize("path", [
    pytest.param(p, marks=pytest.mark.xfail(
        strict=True, reason="train/ checkpoint loading still uses weights_only=False"))
    if _weights_only_pending(p) else p
    for p in FILES], ids=_rel)
def test_torch_load_weights_only(path):
    tree = ast.parse(path.read_text())
    for call in _calls(tree, {"torch"}, "load"):
        v = _kw(call, "weights_only")
        assert isinstance(v, ast.Constant) and v.value is True, (
            f"{_rel(path)}:{call.lineno}: torch.load without weights_only=True")


@pytest.mark.parametrize("path", FILES, ids=_rel)
def test_no_pickle_and_no_network_imports(path):
    tree = ast.parse(path.read_text())
    allowed = NETWORK_ALLOWED.get(_rel(path), set())
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            mods = [a.name.split(".")[0] for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            mods = [node.module.split(".")[0]]
        else:
            continue
        for m in mods:
            assert m not in PICKLE_MODULES, f"{_rel(path)}:{node.lineno} imports {m}"
            assert m not in NETWORK_MODULES or m in allowed, (
                f"{_rel(path)}:{node.lineno} imports {m}; the tool opens no network "
                "connection (add it to NETWORK_ALLOWED with the reason if it must)")
    if "socket" in allowed:
        for node in ast.walk(tree):
            if (isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name)
                    and node.value.id == "socket"):
                assert node.attr in SOCKET_CALLS_ALLOWED, f"{_rel(path)}: socket.{node.attr}"


def test_scan_catches_violations(tmp_path):
    """The scan itself works: it flags a bad np.load / torch.load / import."""
    bad = ast.parse("import numpy as np\nimport torch\nimport requests\n"
                    "np.load('a')\ntorch.load('b', weights_only=False)\n")
    assert len(list(_calls(bad, {"np"}, "load"))) == 1
    call = next(_calls(bad, {"torch"}, "load"))
    assert _kw(call, "weights_only").value is False
    assert _kw(next(_calls(bad, {"np"}, "load")), "allow_pickle") is None


# ---------------------------------------------------------------- determinism

_SCRIPT = """
import contextlib, io, json, sys
from postcollapse.cli import main
outs = []
for args in json.loads(sys.argv[1]):
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        rc = main(args)
    outs.append([rc, buf.getvalue()])
sys.stdout.write(json.dumps(outs))
"""


def _run_all(commands, cwd):
    """Run every command in one fresh process (random hash seed); [[rc, stdout], ...]."""
    import json

    env = {**os.environ, "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1",
           "MKL_NUM_THREADS": "1", "PYTHONHASHSEED": "random"}
    r = subprocess.run([sys.executable, "-c", _SCRIPT, json.dumps(commands)],
                       capture_output=True, cwd=cwd, env=env, timeout=300)
    assert r.returncode == 0, r.stderr.decode()
    return json.loads(r.stdout)


@pytest.mark.slow
def test_theory_commands_are_deterministic(tmp_path):
    """Same commands in two fresh processes (random hash seeds): identical bytes out."""
    rng = np.random.default_rng(0)
    np.save(tmp_path / "d.npy", rng.normal(size=(300, 6)) @ rng.normal(size=(6, 6)))
    np.savez(tmp_path / "xy.npz", x=rng.normal(size=(200, 4)), y=rng.normal(size=(200, 3)))
    np.savez(tmp_path / "lat.npz", mu=rng.normal(size=(300, 3)) * [1, 0.05, 0],
             logvar=rng.normal(size=(300, 3)) * 0.1 - 1)
    d, xy = str(tmp_path / "d.npy"), str(tmp_path / "xy.npz")
    commands = [
        ["diagnose", "--latents", str(tmp_path / "lat.npz"), "--json"],
        ["diagnose", "--latents", str(tmp_path / "lat.npz")],
        ["thresholds", d, "--keep", "2"], ["thresholds", d, "--json", "--eta-dec", "learn"],
        ["thresholds", "synthetic", "--json"],
        ["optimum", d, "--latent-dim", "4", "--beta", "0.3", "--json"],
        ["optimum", xy, "--latent-dim", "3", "--beta", "0.1", "--eta-dec", "learn"],
        ["optimum", d, "--latent-dim", "3", "--beta", "0.5", "--levels", "2", "--beta2", "1",
         "--latent-dim2", "2", "--json"],
        ["optimum", d, "--latent-dim", "3", "--beta", "0.5", "--free-bits", "0.2", "--json"],
        ["effective-beta", "--convention", "pythae-vae", "--dim", "784", "--json"],
    ]
    save = ["optimum", d, "--latent-dim", "4", "--beta", "0.3", "--save"]
    first = _run_all([*commands, [*save, str(tmp_path / "a.npz")]], tmp_path)
    second = _run_all([*commands, [*save, str(tmp_path / "b.npz")]], tmp_path)
    for args, a, b in zip(commands, first, second, strict=False):
        assert a[0] == 0 and a == b, args
    with np.load(tmp_path / "a.npz", allow_pickle=False) as a, \
            np.load(tmp_path / "b.npz", allow_pickle=False) as b:
        assert a.files == b.files
        for k in a.files:
            assert a[k].tobytes() == b[k].tobytes(), k
