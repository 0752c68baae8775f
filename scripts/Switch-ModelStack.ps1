<#
.SYNOPSIS
  Switch, list or show stackd model stacks (PowerShell, like AitherZero's 5021_Switch-ModelStack.ps1).
.EXAMPLE
  .\Switch-ModelStack.ps1 -List
  .\Switch-ModelStack.ps1 -Stack elastic-hybrid
  .\Switch-ModelStack.ps1 -Stack elastic-hybrid -DryRun
  .\Switch-ModelStack.ps1 -Status
#>
[CmdletBinding(DefaultParameterSetName = 'List')]
param(
  [Parameter(ParameterSetName = 'Switch', Mandatory)] [string] $Stack,
  [Parameter(ParameterSetName = 'Switch')] [switch] $DryRun,
  [Parameter(ParameterSetName = 'List')] [switch] $List,
  [Parameter(ParameterSetName = 'Status')] [switch] $Status,
  [string] $Url = $(if ($env:STACKD_URL) { $env:STACKD_URL } else { 'http://127.0.0.1:8001' }),
  [string] $Token = $env:STACKD_TOKEN
)
$ErrorActionPreference = 'Stop'
if (-not $Token) {
  $stateDir = if ($env:STACKD_STATE_DIR) { $env:STACKD_STATE_DIR } else { Join-Path $HOME '.local/state/stackd' }
  $tokenFile = Join-Path $stateDir 'token'
  if (Test-Path $tokenFile) { $Token = (Get-Content $tokenFile -Raw).Trim() }
}
try {
  switch ($PSCmdlet.ParameterSetName) {
    'Switch' {
      $body = @{ stack = $Stack; dry_run = [bool]$DryRun } | ConvertTo-Json
      $r = Invoke-RestMethod -Method Post -Uri "$Url/model-stacks/switch" -Body $body `
        -ContentType 'application/json' -Headers @{ Authorization = "Bearer $Token" }
      if ($DryRun) { $r.plan.steps | Format-Table kind, model, role } else { $r | ConvertTo-Json -Depth 8 }
    }
    'Status' { (Invoke-RestMethod -Uri "$Url/status") | ConvertTo-Json -Depth 8 }
    default {
      $r = Invoke-RestMethod -Uri "$Url/model-stacks"
      $r.stacks | Format-Table @{n='active'; e={ if ($_.active) { '*' } else { '' } }}, name, description
    }
  }
} catch [System.Net.Http.HttpRequestException] {
  Write-Error "no stackd daemon at $Url; start it with 'stackd serve'"
  exit 1
}
