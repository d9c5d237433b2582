"""The wheel and the sdist install in a clean virtual environment and serve the README's snippet.

``python -m build`` makes both (the wheel from the sdist, so the sdist must hold
everything). Each is installed with pip, dependencies from the registry (or
pip's cache), into a new virtual environment that sees none of this project's
packages; then the README's "Serve and call tools" snippet runs from it, as a
new user would paste it, and a client and the ``securemcp`` console script from
the same environment call its tool. No extra is installed, so trio and uvloop
are really absent there: the asyncio path must not need them, and asking for
the trio backend must name the extra.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import pytest

import securemcp

from .cli_helpers import Server

ROOT = Path(__file__).resolve().parent.parent
_NOT_BUILT = shutil.ignore_patterns(
    ".git", ".venv*", "*.egg-info", "__pycache__", ".*_cache", ".hypothesis", "site", "dist"
)
"""What the copy built from leaves out: environments, caches, earlier builds."""
SLOW = 300  # seconds: a build, a virtual environment and an install from pip's cache
README_RUN = 'transport.run(host="0.0.0.0", port=8765)  # blocking; Ctrl+C stops it cleanly'

CLIENT = """
import sys
import anyio
from securemcp.transport import WebSocketClient

async def main(url: str) -> None:
    async with WebSocketClient(url) as client:
        print([tool["name"] for tool in await client.list_tools()])
        print(await client.invoke_tool("my_tool", {"param": "value"}))

anyio.run(main, sys.argv[1])
"""

NO_TRIO = """
import importlib.util
from securemcp import SecureMCP
from securemcp.transport import WebSocketTransport

print(importlib.util.find_spec("trio"), importlib.util.find_spec("uvloop"))
try:
    WebSocketTransport(SecureMCP("x")).run(port=0, backend="trio")
except RuntimeError as exc:
    print(exc)
"""


def readme_snippet() -> str:
    """The README's server snippet, bound to 127.0.0.1 on a free port instead of 8765."""
    readme = ROOT.joinpath("README.md").read_text()
    section = readme.split("## Serve and call tools", 1)[1]
    code = section.split("```python\n", 1)[1].split("```", 1)[0]
    assert README_RUN in code, "the README's snippet changed: update this test"
    return code.replace(README_RUN, 'transport.run(host="127.0.0.1", port=0)')


@pytest.fixture(scope="module")
def dists(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The sdist and the wheel ``python -m build`` makes of this checkout.

    Built from a copy: setuptools writes ``securemcp.egg-info`` into the tree it
    builds, and in the checkout that directory would make pytest's next run
    rewrite the whole installed package's asserts (it lists the package's files),
    which ``python -m securemcp`` under runpy cannot load.
    """
    out = tmp_path_factory.mktemp("dist")
    tree = tmp_path_factory.mktemp("tree") / "securemcp"
    shutil.copytree(ROOT, tree, symlinks=True, ignore=_NOT_BUILT)
    done = subprocess.run(
        [sys.executable, "-m", "build", "--outdir", str(out), str(tree)],
        capture_output=True,
        text=True,
        timeout=SLOW,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    version = securemcp.__version__
    found = {
        "sdist": out / f"securemcp-{version}.tar.gz",
        "wheel": out / f"securemcp-{version}-py3-none-any.whl",
    }
    assert sorted(out.iterdir()) == sorted(found.values())
    return found


@pytest.mark.timeout(SLOW)
def test_the_wheel_and_the_sdist_hold_the_package(dists: dict[str, Path]) -> None:
    with zipfile.ZipFile(dists["wheel"]) as wheel:
        names = set(wheel.namelist())
        metadata = wheel.read(f"securemcp-{securemcp.__version__}.dist-info/METADATA").decode()
    for path in [
        "securemcp/py.typed",
        "securemcp/backends/server.py",
        "securemcp/protocol/server.py",
        "securemcp/redis/__init__.py",
    ]:
        assert path in names
    assert not any(name.startswith(("tests/", "benchmarks/", "docs/")) for name in names)
    # The version from securemcp.__version__; trio and uvloop only as extras.
    assert f"\nVersion: {securemcp.__version__}\n" in metadata
    requires = re.findall(r"^Requires-Dist: (.*)$", metadata, re.MULTILINE)
    core = [r for r in requires if "extra ==" not in r]
    assert sorted(re.split(r"[<>=!; \[]", r)[0] for r in core) == [
        "anyio",
        "h11",
        "pydantic",
        "sniffio",
        "wsproto",
    ]
    assert any(r.startswith("trio") and 'extra == "trio"' in r for r in requires)
    assert any(r.startswith("uvloop") and 'extra == "uvloop"' in r for r in requires)
    with tarfile.open(dists["sdist"]) as sdist:
        members = {name.split("/", 1)[1] for name in sdist.getnames() if "/" in name}
    assert {"pyproject.toml", "README.md", "backends/server.py", "securemcp/app.py"} <= members


@pytest.fixture(scope="module", params=["wheel", "sdist"])
def clean_env(
    request: pytest.FixtureRequest, dists: dict[str, Path], tmp_path_factory: pytest.TempPathFactory
) -> Path:
    """A new virtual environment with only the artifact (and its dependencies) installed."""
    env = tmp_path_factory.mktemp(f"venv-{request.param}")
    subprocess.run([sys.executable, "-m", "venv", str(env)], check=True, timeout=SLOW)
    python = env / "bin" / "python"
    done = subprocess.run(
        [str(python), "-m", "pip", "install", "--quiet", str(dists[request.param])],
        capture_output=True,
        text=True,
        timeout=SLOW,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return python


@pytest.mark.timeout(SLOW)
def test_the_installed_package_serves_the_readme_snippet(clean_env: Path, tmp_path: Path) -> None:
    tmp_path.joinpath("readme_app.py").write_text(readme_snippet())
    # The project's checkout must not be importable from there: only the installed copy is.
    server = Server(tmp_path, command=("readme_app.py",), python=str(clean_env))
    try:
        url = server.url
        client = subprocess.run(
            [str(clean_env), "-c", CLIENT, url],
            capture_output=True,
            text=True,
            timeout=60,
            cwd=tmp_path,
        )
        assert client.returncode == 0, client.stderr
        assert client.stdout.splitlines() == ["['my_tool']", "{'result': 'value'}"]
        # The console script the wheel declares, from the same environment.
        call = subprocess.run(
            [str(clean_env.with_name("securemcp")), "call", url, "my_tool", "param=cli"],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert call.returncode == 0, call.stderr
        assert json.loads(call.stdout) == {"result": "cli"}
        assert server.interrupt() == 0
    finally:
        server.close()
    located = subprocess.run(
        [str(clean_env), "-c", "import securemcp; print(securemcp.__file__)"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=60,
    )
    assert located.stdout.startswith(str(clean_env.parent.parent)), located.stdout


@pytest.mark.timeout(SLOW)
def test_without_extras_trio_is_absent_and_named(clean_env: Path, tmp_path: Path) -> None:
    done = subprocess.run(
        [str(clean_env), "-c", NO_TRIO], capture_output=True, text=True, timeout=60, cwd=tmp_path
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == [
        "None None",
        "backend 'trio' needs trio, which is not installed: pip install 'securemcp[trio]', "
        "or use backend='asyncio'",
    ]
