"""The Ollama simulator answers the official ``ollama`` client as Ollama's docs/api.md says."""

from __future__ import annotations

import ollama
import openai
import pytest

from stackd.sim import Fault, OllamaSim

pytest_plugins = ["tests.sim_fixtures"]


def _client(sim: OllamaSim) -> ollama.AsyncClient:
    return ollama.AsyncClient(host=sim.url, timeout=5)


async def test_tags_list_the_pulled_models(ollama_sim: OllamaSim) -> None:
    listing = await _client(ollama_sim).list()
    assert [m.model for m in listing.models] == ["llama3.2:3b"]
    assert listing.models[0].size == ollama_sim.pulled_file("llama3.2:3b").size  # type: ignore[union-attr]


async def test_pull_streams_monotonic_progress_per_layer_then_success(ollama_sim: OllamaSim) -> None:
    progress = [p async for p in await _client(ollama_sim).pull("qwen3:8b", stream=True)]
    statuses = [p.status for p in progress]
    assert statuses[0] == "pulling manifest"
    assert statuses[-4:] == [
        "verifying sha256 digest",
        "writing manifest",
        "removing any unused layers",
        "success",
    ]
    weights = [p for p in progress if p.total == 5_000_000_000]
    completed = [p.completed for p in weights if p.completed is not None]
    assert len(completed) == len(weights)  # every weight line says how far it got
    assert completed == sorted(completed) and completed[0] == 0 and completed[-1] == 5_000_000_000
    assert len(completed) >= 3
    assert weights[0].digest and weights[0].status == f"pulling {weights[0].digest[7:19]}"
    assert "qwen3:8b" in {m.model for m in (await _client(ollama_sim).list()).models}


async def test_pull_of_a_tag_the_registry_lacks_ends_with_an_error_line(ollama_sim: OllamaSim) -> None:
    with pytest.raises(ollama.ResponseError, match="file does not exist"):
        async for _ in await _client(ollama_sim).pull("nosuch:1b", stream=True):
            pass


async def test_pull_fails_halfway_after_half_the_weights(ollama_sim: OllamaSim) -> None:
    await ollama_sim.set_fault(Fault.pull_fails_halfway)
    seen = []
    with pytest.raises(ollama.ResponseError, match="max retries exceeded"):
        async for progress in await _client(ollama_sim).pull("qwen3:8b", stream=True):
            seen.append(progress)
    assert max(p.completed or 0 for p in seen) == 2_500_000_000
    assert ollama_sim.pulled_file("qwen3:8b") is None


async def test_empty_prompt_loads_and_keep_alive_zero_unloads(ollama_sim: OllamaSim) -> None:
    client = _client(ollama_sim)
    loaded = await client.generate(
        "llama3.2:3b", prompt="", options={"num_gpu": 0, "num_ctx": 2048}, keep_alive=-1
    )
    assert loaded.done and loaded.done_reason == "load"
    (running,) = (await client.ps()).models
    assert (running.model, running.size_vram, running.context_length) == ("llama3.2:3b", 0, 2048)
    assert running.size is not None and running.size > 2_000_000_000
    unloaded = await client.generate("llama3.2:3b", prompt="", keep_alive=0)
    assert unloaded.done_reason == "unload"
    assert (await client.ps()).models == []


async def test_gpu_load_reports_vram(ollama_sim: OllamaSim) -> None:
    client = _client(ollama_sim)
    await client.generate("llama3.2:3b", options={"num_ctx": 4096}, keep_alive="10m")
    (running,) = (await client.ps()).models
    assert running.size_vram == running.size


async def test_changed_runner_options_force_a_reload_and_same_options_do_not(ollama_sim: OllamaSim) -> None:
    client = _client(ollama_sim)
    options = {"num_gpu": 0, "num_ctx": 2048}
    await client.generate("llama3.2:3b", options=options, keep_alive=-1)
    await client.generate("llama3.2:3b", prompt="hi", options=options, keep_alive=-1)
    await client.chat(
        "llama3.2:3b", messages=[{"role": "user", "content": "x"}], options=options, keep_alive=-1
    )
    assert ollama_sim.reloads["llama3.2:3b"] == 0 and ollama_sim.loads["llama3.2:3b"] == 1
    await client.generate("llama3.2:3b", prompt="hi", keep_alive=-1)  # Ollama's default num_ctx, GPU
    assert ollama_sim.reloads["llama3.2:3b"] == 1


async def test_generate_and_chat_stream_ndjson_with_counts(ollama_sim: OllamaSim) -> None:
    client = _client(ollama_sim)
    parts = [p async for p in await client.generate("llama3.2:3b", prompt="a b c", stream=True)]
    assert "".join(p.response or "" for p in parts) == ollama_sim.control.answer
    assert parts[-1].done and parts[-1].done_reason == "stop"
    assert (parts[-1].prompt_eval_count, parts[-1].eval_count) == (3, ollama_sim.control.tokens)
    chat = [
        p
        async for p in await client.chat(
            "llama3.2:3b", messages=[{"role": "user", "content": "x"}], stream=True
        )
    ]
    assert "".join(p.message.content or "" for p in chat) == ollama_sim.control.answer


async def test_unknown_model_is_404_with_ollamas_text(ollama_sim: OllamaSim) -> None:
    with pytest.raises(ollama.ResponseError) as caught:
        await _client(ollama_sim).generate("ghost:7b", prompt="")
    assert caught.value.status_code == 404
    assert caught.value.error == 'model "ghost:7b" not found, try pulling it first'


async def test_keep_alive_expiry_follows_the_injected_clock() -> None:
    now = [1_000.0]
    async with OllamaSim(pulled={"m:1b": 1_000}, clock=lambda: now[0]) as sim:
        client = _client(sim)
        await client.generate("m:1b", keep_alive="5m")
        assert len((await client.ps()).models) == 1
        now[0] += 301
        assert (await client.ps()).models == []


async def test_show_delete_version(ollama_sim: OllamaSim) -> None:
    client = _client(ollama_sim)
    shown = await client.show("llama3.2:3b")
    assert shown.details is not None and shown.details.family == "llama"
    assert (await client.delete("llama3.2:3b")).status == "success"
    with pytest.raises(ollama.ResponseError):
        await client.show("llama3.2:3b")
    assert (await client.list()).models == []


async def test_openai_compatible_chat_on_the_ollama_port(ollama_sim: OllamaSim) -> None:
    async with openai.AsyncOpenAI(base_url=ollama_sim.url + "/v1", api_key="ollama", max_retries=0) as client:
        reply = await client.chat.completions.create(
            model="llama3.2:3b", messages=[{"role": "user", "content": "x"}]
        )
    assert reply.choices[0].message.content == ollama_sim.control.answer
