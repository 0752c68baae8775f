"""The Ollama driver against the Ollama simulator: progress, placement, unload, errors, options."""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator

import ollama
import pytest

from stackd.config.models import OllamaRuntime
from stackd.drivers.ollama import OllamaHttpDriver
from stackd.errors import DriverFailed, DriverUnavailable
from stackd.sim import Fault, OllamaSim

pytest_plugins = ["tests.sim_fixtures"]

CPU_RUNTIME = OllamaRuntime(tag="llama3.2:3b", options={"num_gpu": 0, "num_ctx": 4096}, keep_alive=-1)


@pytest.fixture
async def driver(ollama_sim: OllamaSim) -> AsyncIterator[OllamaHttpDriver]:
    driver = OllamaHttpDriver(ollama_sim.url, request_timeout_s=2, load_timeout_s=2, stall_timeout_s=2)
    yield driver
    await driver.close()


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


async def test_list_tags_includes_pulled_models(driver: OllamaHttpDriver) -> None:
    assert await driver.list_tags() == frozenset({"llama3.2:3b"})


async def test_latest_tags_are_also_listed_bare() -> None:
    async with OllamaSim(pulled={"nomic-embed-text": 1_000}) as sim:
        driver = OllamaHttpDriver(sim.url)
        assert await driver.list_tags() == frozenset({"nomic-embed-text:latest", "nomic-embed-text"})
        await driver.close()


async def test_pull_yields_monotonic_progress_and_ends_in_success(driver: OllamaHttpDriver) -> None:
    progress = [p async for p in driver.pull("qwen3:8b")]
    assert progress[-1].status == "success"
    assert all(p.tag == "qwen3:8b" for p in progress)
    by_layer: dict[str, list[int]] = {}
    for p in progress:
        if p.digest is not None and p.completed is not None:
            by_layer.setdefault(p.digest, []).append(p.completed)
    assert by_layer and all(c == sorted(c) for c in by_layer.values())
    assert "qwen3:8b" in await driver.list_tags()


async def test_pull_failing_halfway_is_driver_failed(ollama_sim: OllamaSim, driver: OllamaHttpDriver) -> None:
    await ollama_sim.set_fault(Fault.pull_fails_halfway)
    seen = []
    with pytest.raises(DriverFailed, match="max retries exceeded"):
        async for progress in driver.pull("qwen3:8b"):
            seen.append(progress)
    assert seen and seen[-1].status != "success"


async def test_pull_of_an_unknown_tag_is_driver_failed(driver: OllamaHttpDriver) -> None:
    with pytest.raises(DriverFailed, match="file does not exist"):
        async for _ in driver.pull("nosuch:1b"):
            pass


async def test_pull_cut_before_success_is_reported(ollama_sim: OllamaSim, driver: OllamaHttpDriver) -> None:
    await ollama_sim.set_fault(Fault.die_mid_stream)
    with pytest.raises(DriverUnavailable, match="was lost while trying to pull qwen3:8b"):
        async for _ in driver.pull("qwen3:8b"):
            pass


class _StreamEndsEarly:
    """An injected client whose pull stream closes cleanly before ``success``."""

    async def pull(self, tag: str, stream: bool) -> AsyncIterator[ollama.ProgressResponse]:
        async def lines() -> AsyncIterator[ollama.ProgressResponse]:
            yield ollama.ProgressResponse(status="pulling manifest")
            yield ollama.ProgressResponse(status="pulling abc", digest="sha256:abc", total=10, completed=5)

        return lines()


async def test_pull_stream_ending_without_success_is_driver_failed() -> None:
    driver = OllamaHttpDriver("http://ollama.invalid:11434", client=_StreamEndsEarly())  # type: ignore[arg-type]
    with pytest.raises(DriverFailed, match="ended before success"):
        async for _ in driver.pull("qwen3:8b"):
            pass


async def test_cpu_load_then_unload(driver: OllamaHttpDriver) -> None:
    await driver.load(CPU_RUNTIME)
    (loaded,) = await driver.loaded()
    assert (loaded.tag, loaded.size_vram) == ("llama3.2:3b", 0)
    assert loaded.size > 0 and loaded.expires_at is not None
    await driver.unload(CPU_RUNTIME)
    assert await driver.loaded() == []
    await driver.unload(CPU_RUNTIME)  # unloading what is not loaded is fine


async def test_unloading_a_model_ollama_does_not_have_is_fine(driver: OllamaHttpDriver) -> None:
    await driver.unload(OllamaRuntime(tag="never-pulled:1b"))


async def test_every_call_carries_the_same_options_so_ollama_never_reloads(
    ollama_sim: OllamaSim, driver: OllamaHttpDriver
) -> None:
    await driver.load(CPU_RUNTIME)
    await driver.load(CPU_RUNTIME)
    await driver.unload(CPU_RUNTIME)
    await driver.load(CPU_RUNTIME)
    assert ollama_sim.reloads["llama3.2:3b"] == 0
    calls = [
        body for _, path, body, _ in ollama_sim.requests if path == "/api/generate" and isinstance(body, dict)
    ]
    assert len(calls) == 4
    assert all(body["options"] == {"num_gpu": 0, "num_ctx": 4096} for body in calls)
    assert [body["keep_alive"] for body in calls] == [-1, -1, 0, -1]


async def test_loading_a_missing_model_is_driver_failed_with_ollamas_message(
    driver: OllamaHttpDriver,
) -> None:
    with pytest.raises(DriverFailed, match='model "ghost:7b" not found, try pulling it first'):
        await driver.load(OllamaRuntime(tag="ghost:7b"))


async def test_ollama_down_is_driver_unavailable_naming_the_url() -> None:
    url = f"http://127.0.0.1:{_free_port()}"
    driver = OllamaHttpDriver(url)
    for call in (driver.list_tags(), driver.loaded(), driver.load(CPU_RUNTIME)):
        with pytest.raises(DriverUnavailable) as caught:
            await call
        assert url in caught.value.message and "ollama serve" in caught.value.message
    with pytest.raises(DriverUnavailable, match="OLLAMA_HOST"):
        async for _ in driver.pull("qwen3:8b"):
            pass
    await driver.close()


async def test_refused_then_back(ollama_sim: OllamaSim, driver: OllamaHttpDriver) -> None:
    await ollama_sim.set_fault(Fault.refuse)
    with pytest.raises(DriverUnavailable):
        await driver.list_tags()
    await ollama_sim.set_fault(Fault.none)
    assert "llama3.2:3b" in await driver.list_tags()


async def test_hanging_ollama_is_bounded_by_the_timeout(ollama_sim: OllamaSim) -> None:
    await ollama_sim.set_fault(Fault.hang)
    driver = OllamaHttpDriver(ollama_sim.url, request_timeout_s=0.3, load_timeout_s=0.3, stall_timeout_s=0.3)
    with pytest.raises(DriverUnavailable, match="did not answer in time"):
        await driver.loaded()
    with pytest.raises(DriverUnavailable):
        await driver.load(CPU_RUNTIME)
    await driver.close()


async def test_server_errors_and_garbage_are_driver_failed(
    ollama_sim: OllamaSim, driver: OllamaHttpDriver
) -> None:
    await ollama_sim.set_fault(Fault.http500)
    with pytest.raises(DriverFailed, match="http500"):
        await driver.loaded()
    await ollama_sim.set_fault(Fault.malformed_body)
    with pytest.raises(DriverFailed, match="unreadable"):
        await driver.list_tags()
