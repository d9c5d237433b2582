"""The documentation site builds with ``mkdocs build --strict``, and its reference misses nothing.

Strict mode turns every MkDocs warning into a failure: a broken link or anchor,
a page missing from the nav, and (through the Griffe extension
``docs/_ext/require_docstrings.py``) a public name without a docstring. The
tests below build the real site once, check that every name of the public
modules' ``__all__`` is on a page, and prove on a throwaway package that the
extension, configured as in ``mkdocs.yml``, fails a build.
"""

from __future__ import annotations

import importlib
import inspect
import os
import runpy
import subprocess
import sys
import textwrap
import zlib
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
EXTENSION = ROOT / "docs" / "_ext" / "require_docstrings.py"

# The modules whose __all__ is the public API (docs/reference/index.md says so).
PUBLIC_MODULES = [
    "securemcp",
    "securemcp.transport",
    "securemcp.testing",
    "securemcp.pytest_plugin",
    "securemcp.backends",
    "securemcp.protocol",
    "securemcp.redis",
    "securemcp.store",
    "securemcp.pubsub",
    "securemcp.ratelimit",
    "securemcp.progress",
    "securemcp.security",
    "securemcp.auth",
    "securemcp.param_headers",
    "securemcp.errors",
    "securemcp.context",
    "securemcp.origin",
    "securemcp.proxies",
    "securemcp.tools",
    "securemcp.app",
]


def mkdocs_build(config: Path, site: Path) -> subprocess.CompletedProcess[str]:
    """``mkdocs build --strict`` of ``config`` into ``site``, as CI and a writer run it."""
    return subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "-f", str(config), "-d", str(site)],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=config.parent,
        env={**os.environ, "NO_MKDOCS_2_WARNING": "1"},
    )


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The real site, built once for this module's tests."""
    site = tmp_path_factory.mktemp("site")
    done = mkdocs_build(ROOT / "mkdocs.yml", site)
    assert done.returncode == 0, done.stderr
    assert "WARNING" not in done.stderr, done.stderr
    return site


def inventory(site: Path) -> set[str]:
    """The object paths in the site's ``objects.inv`` (Sphinx inventory version 2)."""
    header, _, body = (
        site.joinpath("objects.inv").read_bytes().partition(b"compressed using zlib.\n")
    )
    assert header.startswith(b"# Sphinx inventory version 2")
    return {line.split(" ", 1)[0] for line in zlib.decompress(body).decode().splitlines()}


def resolve(path: str) -> Any:
    """The object a dotted path names, or None."""
    parts = path.split(".")
    for split in range(len(parts), 0, -1):
        try:
            obj: Any = importlib.import_module(".".join(parts[:split]))
        except ImportError:
            continue
        for attribute in parts[split:]:
            obj = getattr(obj, attribute, None)
        return obj
    return None


def test_the_site_builds_with_every_page(site: Path) -> None:
    for page in [
        "getting-started",
        "tutorial",
        "chat",
        "deployment",
        "security",
        "mcp",
        "benchmarks",
        "benchmarks-harness",
        "changelog",
        "reference/securemcp",
        "reference/transport",
        "reference/protocol",
        "reference/services",
        "reference/redis",
    ]:
        assert site.joinpath(page, "index.html").is_file(), page
    reference = site.joinpath("reference", "securemcp", "index.html").read_text()
    assert 'id="securemcp.SecureMCP"' in reference
    # The docstrings' reStructuredText roles are rendered as code, not shown raw.
    assert ":class:`" not in reference
    assert ":meth:`" not in reference
    # The chat page shows the screenshot its README includes, from the site's own copy.
    chat = site.joinpath("chat", "index.html").read_text()
    assert 'src="../chat-page.png"' in chat
    assert site.joinpath("chat-page.png").is_file()
    # The benchmark charts are on the results page.
    results = site.joinpath("benchmarks", "index.html").read_text()
    for chart in ["throughput", "latency", "memory"]:
        assert f'src="../charts/{chart}.svg"' in results
        assert site.joinpath("charts", f"{chart}.svg").is_file()


def test_every_public_name_is_on_a_reference_page(site: Path) -> None:
    documented = inventory(site)
    documented_objects = [resolve(path) for path in documented]
    missing = []
    for module_name in PUBLIC_MODULES:
        module: ModuleType = importlib.import_module(module_name)
        for name in module.__all__:
            path = f"{module_name}.{name}"
            obj = getattr(module, name)
            if path in documented:
                continue
            if (inspect.isclass(obj) or inspect.isfunction(obj)) and any(
                found is obj for found in documented_objects
            ):
                continue
            missing.append(path)
    assert missing == []


def small_project(root: Path, documented: bool) -> Path:
    """A package with one public function, documented or not, and a site configured like ours."""
    package = root / "tinypkg"
    package.mkdir()
    docstring = '    """Do nothing, documented."""\n' if documented else ""
    package.joinpath("__init__.py").write_text(
        '"""A package for the docs test."""\n\n__all__ = ["helper"]\n\n\n'
        f"def helper() -> None:\n{docstring}    return None\n"
    )
    (root / "docs").mkdir()
    root.joinpath("docs", "index.md").write_text("# tinypkg\n\n::: tinypkg\n")
    ours = yaml.safe_load(ROOT.joinpath("mkdocs.yml").read_text())
    mkdocstrings = next(p for p in ours["plugins"] if isinstance(p, dict) and "mkdocstrings" in p)
    python = mkdocstrings["mkdocstrings"]["handlers"]["python"]
    python["paths"] = [str(root)]
    python["options"]["extensions"] = [
        str(ROOT / extension) for extension in python["options"]["extensions"]
    ]
    config = {
        "site_name": "tinypkg",
        "docs_dir": "docs",
        "strict": ours["strict"],
        "theme": ours["theme"],
        "plugins": [mkdocstrings],
    }
    root.joinpath("mkdocs.yml").write_text(yaml.safe_dump(config))
    return root / "mkdocs.yml"


@pytest.mark.parametrize("documented", [True, False], ids=["documented", "undocumented"])
def test_a_public_name_without_a_docstring_fails_the_build(
    tmp_path: Path, documented: bool
) -> None:
    done = mkdocs_build(small_project(tmp_path, documented), tmp_path / "site")
    if documented:
        assert done.returncode == 0, done.stderr
        assert "tinypkg.helper" in tmp_path.joinpath("site", "index.html").read_text()
    else:
        assert done.returncode != 0
        assert "public name without a docstring: tinypkg.helper" in done.stderr
        assert "Aborted with 1 warnings in strict mode" in done.stdout + done.stderr


def test_rest_docstrings_become_markdown() -> None:
    rest_to_markdown = runpy.run_path(str(EXTENSION))["rest_to_markdown"]
    text = textwrap.dedent(
        """\
        Call :meth:`~securemcp.SecureMCP.tool`, see :class:`Limits`. Like this::

            app = SecureMCP("x")

        >>> 1 + 1
        2

        Done."""
    )
    assert rest_to_markdown(text) == textwrap.dedent(
        """\
        Call ``tool``, see ``Limits``. Like this:

            app = SecureMCP("x")

        ```pycon
        >>> 1 + 1
        2
        ```

        Done."""
    )
