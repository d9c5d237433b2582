"""The pytest plugin, as a project that installs SecureMCP meets it: a test file of its own."""

from __future__ import annotations

import pytest

pytest_plugins = ["pytester"]

USER_TESTS = """
import pytest

from securemcp import Principal, SecureMCP

app = SecureMCP("users-app")


@app.tool(scopes={"admin"})
async def add(a: int, b: int) -> int:
    return a + b


@pytest.fixture(params=["asyncio", "trio"])
def anyio_backend(request):
    return request.param


@pytest.mark.anyio
async def test_add(securemcp_client):
    async with securemcp_client(app, principal=Principal("ann", {"admin"})) as client:
        assert await client.invoke_tool("add", {"a": 1, "b": 2}) == 3


@pytest.mark.anyio
async def test_add_needs_admin(securemcp_client):
    from securemcp import Forbidden

    async with securemcp_client(app, principal=Principal("bob")) as client:
        with pytest.raises(Forbidden):
            await client.invoke_tool("add", {"a": 1, "b": 2})
"""


def run(pytester: pytest.Pytester, *args: str) -> pytest.RunResult:
    # A fresh interpreter: the plugin is found through its entry point, as in a user's project.
    return pytester.runpytest_subprocess("-p", "no:cacheprovider", *args)


def test_a_users_test_file_gets_the_fixture_on_asyncio_and_trio(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_users=USER_TESTS)
    result = run(pytester, "-v", "-W", "error")
    result.assert_outcomes(passed=4)
    result.stdout.fnmatch_lines(
        [
            "*test_add?asyncio? PASSED*",
            "*test_add?trio? PASSED*",
            "*test_add_needs_admin?asyncio? PASSED*",
            "*test_add_needs_admin?trio? PASSED*",
        ]
    )


def test_a_client_left_connected_fails_the_test(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        test_leak="""
import pytest
from securemcp import SecureMCP

app = SecureMCP("leaky")


# asyncio only: on trio the nursery left open is an error of its own, at the end of the run.
@pytest.mark.parametrize("anyio_backend", ["asyncio"])
@pytest.mark.anyio
async def test_forgets_to_close(securemcp_client):
    await securemcp_client(app).connect()
"""
    )
    result = run(pytester)
    result.assert_outcomes(passed=1, errors=1)
    result.stdout.fnmatch_lines(
        ["*ERROR at teardown of test_forgets_to_close*", "*1 TestClient(s) still connected*"]
    )


def test_the_plugin_can_be_disabled(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_users=USER_TESTS)
    result = run(pytester, "-p", "no:securemcp")
    result.stdout.fnmatch_lines(["*fixture 'securemcp_client' not found*"])
    result.assert_outcomes(errors=4)
