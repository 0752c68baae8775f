"""scripts/Switch-ModelStack.ps1, checked by reading its text: no PowerShell runs on this machine.

Each test names one promise of the script (its parameter sets, -WhatIf as the dry run, the HTTP
errors of both PowerShell versions, exit 1 when a switch did not succeed) and finds the code
that keeps it. Where ``pwsh`` is installed, PowerShell's own parser checks the syntax as well.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "Switch-ModelStack.ps1"
TEXT = SCRIPT.read_text(encoding="utf-8")
HELP = TEXT[TEXT.index("<#") + 2 : TEXT.index("#>")]
ALL_SETS = {"Switch", "List", "Status"}


def code_only(text: str) -> str:
    """The script without comments: block comments, then whole-line and trailing '# ...' ones."""
    text = re.sub(r"<#.*?#>", "", text, flags=re.DOTALL)
    return "\n".join(re.sub(r"(^|\s)#(?![>]).*$", "", line) for line in text.splitlines())


CODE = code_only(TEXT)


def block_after(text: str, opening: str) -> str:
    """The text between the braces of the block that starts at ``opening`` (quotes respected)."""
    start = text.index("{", text.index(opening))
    depth, i = 0, start
    while i < len(text):
        char = text[i]
        if char in "'\"":
            i = text.index(char, i + 1)
        elif char == "{":
            depth += 1
        elif char == "}":
            depth -= 1
            if depth == 0:
                return text[start + 1 : i]
        i += 1
    raise AssertionError(f"unbalanced braces after {opening!r}")


def parameters() -> dict[str, dict[str, object]]:
    """Each parameter of the param block: its parameter set (None: every set) and attributes."""
    start = CODE.index("param(") + len("param(")
    body = CODE[start : CODE.index("\n)", start)]
    found: dict[str, dict[str, object]] = {}
    for line in body.splitlines():
        name = re.search(r"\$(\w+)", line)
        if not name:
            continue
        attribute = re.search(r"\[Parameter\((.*?)\)\]", line)
        args = attribute.group(1) if attribute else ""
        parameter_set = re.search(r"ParameterSetName\s*=\s*'(\w+)'", args)
        found[name.group(1)] = {
            "set": parameter_set.group(1) if parameter_set else None,
            "mandatory": "Mandatory" in args,
            "type": re.search(r"\[(string|switch)\]", line).group(1),  # type: ignore[union-attr]
        }
    return found


def test_the_parameter_sets_are_switch_list_and_status_with_list_the_default() -> None:
    params = parameters()

    assert params["Stack"] == {"set": "Switch", "mandatory": True, "type": "string"}
    assert params["DryRun"]["set"] == "Switch"
    assert params["List"]["set"] == "List"
    assert params["Status"]["set"] == "Status"
    assert {name for name, p in params.items() if p["set"] is None} == {"Url", "Token", "Json"}
    assert {p["set"] for p in params.values()} - {None} == ALL_SETS
    assert re.search(r"\[CmdletBinding\([^)]*DefaultParameterSetName = 'List'", CODE)
    branches = block_after(CODE, "switch ($PSCmdlet.ParameterSetName)")
    assert re.findall(r"^  (\S+) \{", branches, flags=re.MULTILINE) == ["'Switch'", "'Status'", "default"]


def test_whatif_does_the_dry_run_through_should_process() -> None:
    assert re.search(r"\[CmdletBinding\([^)]*\bSupportsShouldProcess\b", CODE)
    switch_branch = block_after(CODE, "'Switch' {")

    assert "$PSCmdlet.ShouldProcess(" in switch_branch
    decision = re.search(r"\$switchNow = (.*)", switch_branch)
    assert decision and "$PSCmdlet.ShouldProcess(" in decision.group(1)
    assert "dry_run = (-not $switchNow)" in switch_branch


def test_powershell_7_http_errors_are_read_from_http_response_exception_and_error_details() -> None:
    refusal = block_after(CODE, "function Get-DaemonRefusal")
    branch = block_after(refusal, "'Microsoft.PowerShell.Commands.HttpResponseException'")

    assert "[int] $exception.Response.StatusCode" in branch
    assert "$Record.ErrorDetails.Message" in branch


def test_windows_powershell_5_1_http_errors_are_read_from_the_web_exceptions_response_stream() -> None:
    refusal = block_after(CODE, "function Get-DaemonRefusal")
    branch = block_after(refusal, "$exception -is [System.Net.WebException]")

    assert "$null -ne $exception.Response" in refusal
    assert "[int] $exception.Response.StatusCode" in branch
    assert "$exception.Response.GetResponseStream()" in branch
    assert "ReadToEnd()" in branch


def test_an_http_error_prints_its_status_and_the_daemons_message_not_no_daemon() -> None:
    handler = block_after(block_after(CODE, "function Invoke-Stackd"), "catch")
    unreachable = block_after(handler, "if ($null -eq $refusal)")

    assert "no stackd daemon" in unreachable
    assert "exit 1" in unreachable
    after = handler[handler.index(unreachable) + len(unreachable) :]
    assert 'Write-Failure "HTTP $($refusal.Status) from ${Url}: $message"' in after
    assert re.search(r"Write-Failure \"HTTP[^\n]*\n\s*exit 1", after)


def test_a_switch_that_did_not_succeed_exits_1() -> None:
    switch_branch = block_after(CODE, "'Switch' {")
    not_succeeded = block_after(switch_branch, "if ($r.state -ne 'succeeded')")

    assert "Write-Failure" in not_succeeded
    assert not_succeeded.rstrip().endswith("exit 1")
    assert switch_branch.rstrip().endswith("exit 0")  # reached only when state is 'succeeded'


def test_no_write_error_and_every_failure_line_is_followed_by_exit_1() -> None:
    assert "$ErrorActionPreference = 'Stop'" in CODE
    assert "Write-Error" not in CODE  # under 'Stop' it throws before the 'exit 1' after it
    writer = block_after(CODE, "function Write-Failure")
    assert "[Console]::Error.WriteLine(" in writer

    calls = [m.end() for m in re.finditer(r"^\s*Write-Failure \"", CODE, flags=re.MULTILINE)]
    assert len(calls) >= 4
    for end in calls:
        following = CODE[end:].split("\n", 2)[1].strip()
        assert following == "exit 1", CODE[end - 40 : end + 80]


def test_the_request_body_is_built_by_convert_to_json() -> None:
    invoke = block_after(CODE, "function Invoke-Stackd")

    assert "($Body | ConvertTo-Json -Compress)" in invoke
    assert "[System.Text.Encoding]::UTF8.GetBytes(" in invoke
    assert '"{' not in CODE and "'{\"" not in CODE  # no JSON assembled from strings


def test_the_token_is_looked_for_in_the_clis_order() -> None:
    lookup = block_after(CODE, "if (-not $Token)")
    without_state_dir = block_after(lookup, "} else")

    assert "[string] $Token = $env:STACKD_TOKEN" in CODE
    assert lookup.index("$env:STACKD_STATE_DIR") < lookup.index("/healthz")
    assert "/healthz" in without_state_dir  # the daemon's own state dir, asked only when none is set
    assert without_state_dir.index("$health.state_dir") < without_state_dir.index("$defaultDir")


def test_the_help_documents_every_parameter_and_the_powershell_versions() -> None:
    assert ".SYNOPSIS" in HELP
    assert ".EXAMPLE" in HELP
    assert "-WhatIf" in HELP
    documented = set(re.findall(r"^\.PARAMETER (\w+)$", HELP, flags=re.MULTILINE))
    assert documented == set(parameters())
    notes = HELP[HELP.index(".NOTES") :]
    assert "Windows PowerShell 5.1" in notes
    assert "PowerShell 7.x" in notes


@pytest.mark.skipif(shutil.which("pwsh") is None, reason="PowerShell (pwsh) is not installed")
def test_powershell_parses_the_script() -> None:
    command = (
        "$errors = $null; "
        f"[System.Management.Automation.Language.Parser]::ParseFile('{SCRIPT}', [ref]$null, [ref]$errors)"
        " | Out-Null; $errors | ForEach-Object { $_.Message }; exit $errors.Count"
    )
    result = subprocess.run(
        ["pwsh", "-NoProfile", "-Command", command], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr
