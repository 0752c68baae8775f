"""The remote prober against the OpenAI, Anthropic and Gemini simulators."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator

import pytest

from stackd.config.models import Model, RemoteRuntime
from stackd.config.secrets import Secrets
from stackd.drivers.remote import HttpRemoteProber
from stackd.errors import DriverUnavailable
from stackd.sim import AnthropicSim, Fault, GeminiSim, OpenAISim, SimControl, SimServer

SECRET = "sk-live-do-not-leak-42"
FLAVOURS = {
    "openai": (OpenAISim, "/v1", "OPENAI_API_KEY", "/v1/models", "authorization"),
    "anthropic": (AnthropicSim, "", "ANTHROPIC_API_KEY", "/v1/models", "x-api-key"),
    "gemini": (GeminiSim, "/v1beta", "GEMINI_API_KEY", "/v1beta/models", "x-goog-api-key"),
}


@pytest.fixture(params=sorted(FLAVOURS))
async def remote(request: pytest.FixtureRequest) -> AsyncIterator[tuple[SimServer, Model, str]]:
    sim_class, suffix, env_name, _, _ = FLAVOURS[request.param]
    async with sim_class(control=SimControl(require_api_key=SECRET, hang_s=30)) as sim:
        model = Model(
            runtime="remote",
            placement="cloud",
            api=request.param,
            endpoint=sim.url + suffix,
            remote=RemoteRuntime(api_key_env=env_name),
        )
        yield sim, model, request.param


def _prober(env: dict[str, str], total_timeout_s: float = 5.0) -> HttpRemoteProber:
    return HttpRemoteProber(secrets=Secrets(env), total_timeout_s=total_timeout_s)


def _env(model: Model, value: str = SECRET) -> dict[str, str]:
    assert model.remote is not None and model.remote.api_key_env is not None
    return {model.remote.api_key_env: value}


async def test_probe_lists_models_with_the_key_in_the_flavours_header(remote) -> None:
    sim, model, flavour = remote
    await _prober(_env(model)).probe("cloud", model)
    _, _, _, path, header = FLAVOURS[flavour]
    method, seen_path, _, headers = sim.requests[-1]
    assert (method, seen_path) == ("GET", path)
    assert headers[header] == "<redacted>"  # the key travelled in this header (the sim redacts it)
    if flavour == "anthropic":
        assert headers["anthropic-version"]


async def test_missing_key_names_only_the_variable(remote) -> None:
    sim, model, _ = remote
    with pytest.raises(DriverUnavailable) as caught:
        await _prober({}).probe("cloud", model)
    assert model.remote is not None
    assert f"set {model.remote.api_key_env}" in caught.value.message
    assert sim.requests == []  # nothing was sent


async def test_wrong_key_is_an_authentication_failure_that_never_shows_the_key(remote) -> None:
    _, model, _ = remote
    wrong = "sk-wrong-but-still-secret-99"
    with pytest.raises(DriverUnavailable) as caught:
        await _prober(_env(model, wrong)).probe("cloud", model)
    assert "authentication failed" in caught.value.message
    for text in (str(caught.value), repr(caught.value.to_dict())):
        assert wrong not in text and SECRET not in text


async def test_server_error_is_unavailable_with_the_remotes_message(remote) -> None:
    sim, model, _ = remote
    await sim.set_fault(Fault.http500)
    with pytest.raises(DriverUnavailable, match=r"HTTP 500: The simulator was told to fail"):
        await _prober(_env(model)).probe("cloud", model)


async def test_refused_connection_is_unavailable(remote) -> None:
    sim, model, _ = remote
    await sim.set_fault(Fault.refuse)
    with pytest.raises(DriverUnavailable, match="cannot connect"):
        await _prober(_env(model)).probe("cloud", model)


async def test_hanging_remote_is_bounded_by_the_total_timeout(remote) -> None:
    sim, model, _ = remote
    await sim.set_fault(Fault.hang)
    started = time.monotonic()
    with pytest.raises(DriverUnavailable, match=r"did not answer within 0\.4 s"):
        await _prober(_env(model), total_timeout_s=0.4).probe("cloud", model)
    assert time.monotonic() - started < 2


async def test_key_is_read_from_the_process_environment_at_call_time(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    async with OpenAISim(control=SimControl(require_api_key=SECRET)) as sim:
        model = Model(
            runtime="remote",
            placement="cloud",
            api="openai",
            endpoint=sim.url + "/v1",
            remote=RemoteRuntime(api_key_env="STACKD_TEST_PROBE_KEY"),
        )
        prober = HttpRemoteProber()
        monkeypatch.delenv("STACKD_TEST_PROBE_KEY", raising=False)
        with pytest.raises(DriverUnavailable, match="set STACKD_TEST_PROBE_KEY"):
            await prober.probe("cloud", model)
        monkeypatch.setenv("STACKD_TEST_PROBE_KEY", SECRET)
        await prober.probe("cloud", model)
