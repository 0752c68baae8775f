"""Validators: JSON schema answers, tool calls against their tool's parameters."""

from __future__ import annotations

import json

import pytest

from stackd.router.slices.validators import AnswerValidator, InvalidSliceRequest
from tests.unit.slice_world import PERSON_FORMAT, WEATHER_TOOL


def test_a_schema_answer_is_accepted_or_refused_with_the_failing_path() -> None:
    validator = AnswerValidator(PERSON_FORMAT)
    assert validator.check('{"name": "Ada", "age": 36}').ok
    assert validator.check('```json\n{"name": "Ada", "age": 36}\n```').ok  # one fence is forgiven
    missing = validator.check('{"name": "Ada"}')
    assert not missing.ok and "'age' is a required property" in missing.reason
    negative = validator.check('{"name": "Ada", "age": -1}')
    assert not negative.ok and negative.reason.startswith("does not match the schema: age:")
    prose = validator.check("Ada is 36.")
    assert (prose.ok, prose.reason) == (False, "the answer is not JSON")


def test_json_object_needs_an_object() -> None:
    validator = AnswerValidator({"type": "json_object"})
    assert validator.check('{"a": 1}').ok
    assert not validator.check("[1, 2]").ok


def test_a_tool_call_is_checked_against_its_tools_parameters() -> None:
    validator = AnswerValidator(None, [WEATHER_TOOL])
    good = validator.check(json.dumps({"name": "get_weather", "arguments": {"city": "Oslo"}}))
    assert good.ok and good.tool_call is not None and good.tool_call.arguments == {"city": "Oslo"}
    as_string = validator.check(json.dumps({"name": "get_weather", "arguments": '{"city": "Oslo"}'}))
    assert as_string.ok
    bad = validator.check(json.dumps({"name": "get_weather", "arguments": {"unit": "k"}}))
    assert bad.tool_call_failed and "do not match its parameters" in bad.reason
    unknown = validator.check(json.dumps({"name": "launch", "arguments": {}}))
    assert unknown.tool_call_failed and "unknown tool 'launch'" in unknown.reason
    assert validator.check("It is sunny.").ok  # a plain answer, when no call is required


def test_a_required_tool_call_fails_a_plain_answer() -> None:
    validator = AnswerValidator(None, [WEATHER_TOOL], "required")
    assert validator.check("It is sunny.").tool_call_failed


@pytest.mark.parametrize(
    ("response_format", "tools", "message"),
    [
        ({"type": "json_schema", "json_schema": {"name": "x"}}, None, "must be a JSON Schema object"),
        ({"type": "json_schema", "json_schema": {"schema": {"type": 5}}}, None, "not a valid JSON Schema"),
        ({"type": "yaml"}, None, "is not one of text, json_object, json_schema"),
        (None, [{"type": "function", "function": {}}], "tools[0].function.name is missing"),
    ],
)
def test_an_unusable_contract_is_a_422_naming_the_field(
    response_format: dict[str, object] | None, tools: list[object] | None, message: str
) -> None:
    with pytest.raises(InvalidSliceRequest) as caught:
        AnswerValidator(response_format, tools)
    assert caught.value.status == 422 and message in caught.value.message
