"""The orchestrator's tools' arguments, as the pydantic models that validate ``POST /tools/*``
and the MCP calls, and their OpenAI function-calling schemas (``GET /tools``), generated from the
same models, so what the orchestrator registers is exactly what the endpoints accept."""

from __future__ import annotations

from typing import Annotated, Literal, TypedDict

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, Strict, model_validator

from stackd.api.gateway import ChunkCount, TokenCount, a_number
from stackd.router.routes import DEFAULT_EFFORT, MAX_EFFORT

Effort = Annotated[int, Strict(False), Field(ge=1, le=MAX_EFFORT), BeforeValidator(a_number)]


class ToolArgs(BaseModel):
    # strict: a JSON string is not a number, 0 is not false (as OpenAI validates its own APIs)
    model_config = ConfigDict(extra="forbid", strict=True)

    max_tokens: TokenCount | None = Field(None, description="Upper bound on the answer's tokens.")
    temperature: float | None = Field(None, ge=0, le=2, description="Sampling temperature.")
    stream: bool = Field(False, description="Stream the answer as server-sent events.")
    timeout_s: float | None = Field(
        None,
        ge=1,
        le=3600,
        description="Seconds the whole call may take; then the backend call is cancelled.",
    )


class ReasonArgs(ToolArgs):
    """Think harder about a problem: stackd picks the backend from the effort and the active stack."""

    problem: str = Field(min_length=1, description="The problem to reason about, self-contained.")
    context: str | None = Field(None, description="Optional background the reasoner needs.")
    effort: Effort = Field(
        DEFAULT_EFFORT,
        description="1-10. Low answers from the reflex model; 7-8 local elastic first; 9-10 cloud GPU first.",
    )


class DeepReasoningArgs(ToolArgs):
    """Maximum-quality reasoning: the chain starts with the strongest strategy of the stack."""

    problem: str = Field(min_length=1, description="The problem to reason about, self-contained.")
    context: str | None = Field(None, description="Optional background the reasoner needs.")


class InvokeOptions(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    slice: str | None = Field(None, description="Elastic slice: 6b, 9b or 12b (default: the preset's).")
    max_tokens: TokenCount | None = None
    temperature: float | None = Field(None, ge=0, le=2)
    top_p: float | None = Field(None, gt=0, le=1)
    stop: list[str] | None = None
    # Read when the preset has routing (docs/router.md, "Elastic slices"):
    caller: str | None = Field(None, max_length=256, description="Who calls; routing may pin it to a slice.")
    effort: Effort | None = Field(None, description="1-10: how hard the task is (a routing signal).")
    retrieved_chunks: ChunkCount | None = Field(None, description="Chunks retrieved into the prompt.")
    response_format: dict[str, object] | None = Field(
        None,
        description="OpenAI's response_format, forwarded to the engine; on a routed preset a "
        "json_schema answer is also validated, promoted if invalid.",
    )


class InvokeModelArgs(BaseModel):
    """Call a configured model preset directly (e.g. elastic with a slice, reflex, vision)."""

    model_config = ConfigDict(extra="forbid", strict=True)

    preset: str = Field(min_length=1, description="Preset name, e.g. 'elastic', 'elastic:9b', 'reflex'.")
    prompt: str | None = Field(None, min_length=1, description="A single user prompt (or give messages).")
    messages: list[dict[str, object]] | None = Field(None, min_length=1, description="OpenAI chat messages.")
    options: InvokeOptions = Field(default_factory=InvokeOptions)
    stream: bool = Field(False, description="Stream the answer as server-sent events.")

    @model_validator(mode="after")
    def _prompt_or_messages(self) -> InvokeModelArgs:
        if (self.prompt is None) == (self.messages is None):
            raise ValueError("give exactly one of 'prompt' or 'messages'")
        return self


class FunctionSpec(TypedDict):
    name: str
    description: str
    parameters: dict[str, object]  # the arguments' JSON Schema


class ToolSchema(TypedDict):
    """An OpenAI function-calling tool, as ``GET /tools`` lists it."""

    type: Literal["function"]
    function: FunctionSpec


def tool_schema(name: str, model: type[BaseModel], presets: list[str] | None = None) -> ToolSchema:
    """An OpenAI function tool for ``model``; the ``stream`` transport flag is not the model's to set."""
    schema = model.model_json_schema()
    schema.pop("title", None)
    description = schema.pop("description", "")
    schema["properties"] = {k: v for k, v in schema["properties"].items() if k != "stream"}
    for prop in schema["properties"].values():
        prop.pop("title", None)
    for definition in schema.get("$defs", {}).values():
        definition.pop("title", None)
        for prop in definition.get("properties", {}).values():
            prop.pop("title", None)
    if presets is not None:
        schema["properties"]["preset"]["enum"] = presets
    return {"type": "function", "function": {"name": name, "description": description, "parameters": schema}}
