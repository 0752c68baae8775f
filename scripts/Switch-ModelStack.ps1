<#
.SYNOPSIS
  Switch, list or show stackd model stacks through the daemon's HTTP API.

.DESCRIPTION
  Talks to a running stackd daemon (stackd serve). -Stack switches to a stack and waits until
  the switch has finished; it prints the stack, the state, the steps done and the duration.
  -WhatIf (or -DryRun) asks the daemon for the plan instead and changes nothing.

  Exit status: 0 when the switch succeeded (a dry run: when its plan is feasible); 1 when it
  was rolled back or failed, when the daemon refused the request (the HTTP status and the
  daemon's message are printed) or when no daemon answered at -Url. Answering No at -Confirm
  changes nothing and exits 0. Errors go to stderr as one line starting with 'error: '.

.PARAMETER Stack
  Name of the stack to switch to (see -List). Any characters are allowed: the request body is
  built with ConvertTo-Json.

.PARAMETER DryRun
  Show the plan of the switch to -Stack and change nothing; the same as -WhatIf.

.PARAMETER List
  List the stacks; the active one is marked with '*'. This is the default.

.PARAMETER Status
  Show the active stack, its members' states, drift and degraded members.

.PARAMETER Url
  The daemon's URL. Default: $env:STACKD_URL, else http://127.0.0.1:8001.

.PARAMETER Token
  The bearer token for switching. Default: $env:STACKD_TOKEN, else the file 'token' in the
  state dir: $env:STACKD_STATE_DIR; else the one the daemon names in GET /healthz, then
  $env:XDG_STATE_HOME/stackd or ~/.local/state/stackd.

.PARAMETER Json
  Print the daemon's answer as JSON instead of the summary (errors still go to stderr).

.EXAMPLE
  .\Switch-ModelStack.ps1 -List

.EXAMPLE
  .\Switch-ModelStack.ps1 -Stack elastic-hybrid

.EXAMPLE
  .\Switch-ModelStack.ps1 -Stack elastic-hybrid -WhatIf

.EXAMPLE
  .\Switch-ModelStack.ps1 -Stack elastic-hybrid -Json -Url http://gpu-box:8001

.EXAMPLE
  .\Switch-ModelStack.ps1 -Status

.NOTES
  Written for Windows PowerShell 5.1 and PowerShell 7.x (Windows, Linux, macOS). The two
  report an HTTP error differently: PowerShell 7.x throws HttpResponseException and puts the
  body in ErrorDetails.Message; Windows PowerShell 5.1 throws WebException and keeps the body
  in its Response stream. Both are read by Get-DaemonRefusal.
#>
[CmdletBinding(SupportsShouldProcess, DefaultParameterSetName = 'List')]
param(
  [Parameter(ParameterSetName = 'Switch', Mandatory, Position = 0)] [string] $Stack,
  [Parameter(ParameterSetName = 'Switch')] [switch] $DryRun,
  [Parameter(ParameterSetName = 'List')] [switch] $List,
  [Parameter(ParameterSetName = 'Status')] [switch] $Status,
  [string] $Url = $(if ($env:STACKD_URL) { $env:STACKD_URL } else { 'http://127.0.0.1:8001' }),
  [string] $Token = $env:STACKD_TOKEN,
  [switch] $Json
)
$ErrorActionPreference = 'Stop'
$Url = $Url.TrimEnd('/')

# The token, in the CLI's order: -Token; $env:STACKD_TOKEN; the token file of STACKD_STATE_DIR;
# else that of the state dir the daemon names in GET /healthz (open on loopback), then the default.
$tokenFrom = if ($Token) { '-Token or $env:STACKD_TOKEN' } else { $null }
if (-not $Token) {
  $stateDirs = @()
  if ($env:STACKD_STATE_DIR) {
    $stateDirs += $env:STACKD_STATE_DIR
  } else {
    try {
      $health = Invoke-RestMethod -Method Get -Uri "$Url/healthz" -TimeoutSec 5
      if ($health.state_dir) { $stateDirs += [string] $health.state_dir }
    } catch {
      $health = $null  # no daemon yet, or one that names no state dir: the request below says so
    }
    $defaultDir = if ($env:XDG_STATE_HOME) { Join-Path $env:XDG_STATE_HOME 'stackd' }
      else { Join-Path (Join-Path $HOME '.local') (Join-Path 'state' 'stackd') }
    $stateDirs += $defaultDir
  }
  foreach ($stateDir in $stateDirs) {
    $tokenFile = Join-Path $stateDir 'token'
    if (Test-Path -LiteralPath $tokenFile) {
      $Token = ([string] (Get-Content -LiteralPath $tokenFile -Raw)).Trim()  # an empty file reads as $null
      if ($Token) { $tokenFrom = $tokenFile; break }
    }
  }
  if (-not $Token) {
    $tokenFrom = "nowhere: pass -Token or set STACKD_TOKEN or STACKD_STATE_DIR (no token file in $($stateDirs -join ', '))"
  }
}
$headers = @{}
if ($Token) { $headers['Authorization'] = "Bearer $Token" }

# Write-Error under $ErrorActionPreference = 'Stop' would throw before any 'exit 1' after it:
# failures are written to stderr directly and each caller exits itself.
function Write-Failure([string] $Sentence) {
  [Console]::Error.WriteLine("error: $Sentence")
}

function Get-DaemonRefusal {
  <# The daemon's answer inside a failed Invoke-RestMethod: @{ Status; Message }, or $null
     when no answer came at all (connection refused, name not resolved, timeout). #>
  param([System.Management.Automation.ErrorRecord] $Record)
  $exception = $Record.Exception
  $text = $null
  if ($exception.GetType().FullName -eq 'Microsoft.PowerShell.Commands.HttpResponseException') {
    # PowerShell 7.x: 4xx/5xx throw HttpResponseException; the body is in ErrorDetails.Message.
    $status = [int] $exception.Response.StatusCode
    if ($Record.ErrorDetails) { $text = $Record.ErrorDetails.Message }
  } elseif ($exception -is [System.Net.WebException] -and $null -ne $exception.Response) {
    # Windows PowerShell 5.1: a WebException whose Response carries the status and the body.
    $status = [int] $exception.Response.StatusCode
    if ($Record.ErrorDetails -and $Record.ErrorDetails.Message) {
      $text = $Record.ErrorDetails.Message
    } else {
      $stream = $exception.Response.GetResponseStream()
      if ($stream.CanSeek) { $stream.Position = 0 }
      $reader = New-Object System.IO.StreamReader($stream)
      try { $text = $reader.ReadToEnd() } finally { $reader.Dispose() }
    }
  } else {
    return $null
  }
  # stackd answers {"error": NAME, "message": SENTENCE}; the gateway {"error": {"message": ...}}.
  $message = $text
  try {
    $body = $text | ConvertFrom-Json
    if ($body.message) { $message = $body.message }
    elseif ($body.error.message) { $message = $body.error.message }
  } catch {
    if (-not $message) { $message = '(empty answer)' }
  }
  [pscustomobject]@{ Status = $status; Message = $message }
}

function Invoke-Stackd {
  <# Invoke-RestMethod against the daemon; on failure writes one line to stderr and exits 1. #>
  param([string] $Method, [string] $Path, [object] $Body)
  $request = @{ Method = $Method; Uri = "$Url$Path"; Headers = $headers }
  if ($null -ne $Body) {
    # Bytes, not a string: Windows PowerShell 5.1 would send a string body as ISO-8859-1.
    $request['Body'] = [System.Text.Encoding]::UTF8.GetBytes(($Body | ConvertTo-Json -Compress))
    $request['ContentType'] = 'application/json; charset=utf-8'
  }
  try {
    Invoke-RestMethod @request
  } catch {
    $refusal = Get-DaemonRefusal $_
    if ($null -eq $refusal) {
      Write-Failure "no stackd daemon at $Url; start it with 'stackd serve' or set STACKD_URL ($($_.Exception.Message))"
      exit 1
    }
    $message = $refusal.Message
    if ($refusal.Status -eq 401) { $message += "; the token was read from $tokenFrom" }
    Write-Failure "HTTP $($refusal.Status) from ${Url}: $message"
    exit 1
  }
}

function Format-Step($Step) {
  if ($Step.kind -in 'bind_role', 'unbind_role') {
    $text = "$($Step.kind) $($Step.role)"
    if ($Step.model) { $text += " -> $($Step.model)" }
    return $text
  }
  if ($Step.kind -eq 'roles_swapped') { return 'role table swap' }
  $text = "$($Step.kind) $($Step.model)"
  $target = if ($Step.tag) { $Step.tag } else { $Step.container }
  if ($target) { $text += " ($target)" }
  $text
}

switch ($PSCmdlet.ParameterSetName) {
  'Switch' {
    # -WhatIf makes ShouldProcess print 'What if: ...' and return $false: then ask for the plan.
    $switchNow = (-not $DryRun) -and $PSCmdlet.ShouldProcess("stack '$Stack' at $Url", 'Switch to model stack')
    if (-not $switchNow -and -not $DryRun -and -not $WhatIfPreference) {
      Write-Host "not switched to '$Stack': nothing was changed"
      exit 0
    }
    $r = Invoke-Stackd -Method Post -Path '/model-stacks/switch' `
      -Body ([ordered]@{ stack = $Stack; dry_run = (-not $switchNow); wait = $true })
    if ($Json) { $r | ConvertTo-Json -Depth 10 }
    if ($r.dry_run) {
      $plan = $r.plan
      $steps = @($plan.steps | Where-Object { $_ })
      if (-not $Json) {
        $verdict = if ($plan.feasible) { 'feasible' } else { 'NOT feasible' }
        Write-Host "dry run of '$($plan.stack)': $verdict, $($steps.Count) steps (nothing was changed)"
        $i = 0
        foreach ($step in $steps) { $i++; Write-Host "  $i. $(Format-Step $step)" }
        if ($steps.Count -eq 0) { Write-Host '  nothing to do: the stack is already running as planned' }
      }
      if (-not $plan.feasible) {
        $reasons = (@($plan.refusals) | ForEach-Object { $_.message }) -join '; '
        Write-Failure "switching to '$($plan.stack)' would be refused: $reasons"
        exit 1
      }
      exit 0
    }
    $done = @($r.steps_done | Where-Object { $_ })
    if (-not $Json) {
      $took = ''
      if ($r.started_at -and $r.finished_at) {
        $took = [string]::Format([cultureinfo]::InvariantCulture, ' in {0:0.0} s', $r.finished_at - $r.started_at)
      }
      $origin = if ($r.from_stack) { " (from '$($r.from_stack)')" } else { '' }
      Write-Host "stack '$($r.stack)'${origin}: $($r.state), $($done.Count) steps done$took"
      foreach ($step in $done) { Write-Host "  $(Format-Step $step)" }
      foreach ($d in @($r.degraded)) { if ($d) { Write-Host "degraded: $($d.model): $($d.error)" } }
      if ($r.note) { Write-Host "note: $($r.note)" }
    }
    if ($r.state -ne 'succeeded') {
      # rolled_back, failed, or still running: the switch did not succeed.
      $why = if ($r.error) { $r.error } else { "the switch is $($r.state); follow it at $Url/model-stacks/switch/$($r.switch_id)" }
      Write-Failure "switch to '$($r.stack)' $($r.state): $why"
      exit 1
    }
    exit 0
  }
  'Status' {
    $s = Invoke-Stackd -Method Get -Path '/status'
    if ($Json) { $s | ConvertTo-Json -Depth 10; exit 0 }
    $active = if ($s.active_stack) { $s.active_stack } else { '(none)' }
    Write-Host "active stack: $active"
    if ($s.switch_in_progress) {
      Write-Host "switching:    $($s.switch_in_progress.stack) ($($s.switch_in_progress.state))"
    }
    # Out-Host: the table is shown here, not after the lines written below it.
    @($s.members) | Where-Object { $_ } | Format-Table name, state, detail -AutoSize | Out-Host
    foreach ($item in @($s.drift)) { if ($item) { Write-Host "drift: $item" } }
    foreach ($d in @($s.degraded)) { if ($d) { Write-Host "degraded: $($d.model): $($d.error)" } }
  }
  default {
    $r = Invoke-Stackd -Method Get -Path '/model-stacks'
    if ($Json) { $r | ConvertTo-Json -Depth 10; exit 0 }
    $r.stacks | Format-Table @{ n = 'active'; e = { if ($_.active) { '*' } else { '' } } }, name, description -AutoSize
  }
}
