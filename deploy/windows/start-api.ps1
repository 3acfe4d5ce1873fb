<#
.SYNOPSIS
    Start the daemon (which serves the API) by starting its scheduled task.

.DESCRIPTION
    The daemon serves the API whenever it runs, inside or outside the run window; the window
    only decides when the gateway runs. So starting the API means starting the scheduled task
    "ibkr-node" (setup-tasks.ps1) and waiting until `ibkr-node state` reaches it; the state is
    then shown.

    Safe to run twice: when the daemon already answers nothing is started (the task never runs
    a second instance anyway). The exit code is `ibkr-node state`'s: 0 SERVING, 1 another state
    (e.g. outside the window), 2 unreachable.

.PARAMETER Force
    Kept from the seed, where it ignored the run window (the API has none now). Here it also
    enables the scheduled task when it has been disabled.

.PARAMETER TimeoutSeconds
    How long to wait for the daemon to answer after starting the task; default 90.

.EXAMPLE
    .\start-api.ps1
    Starts the daemon if it is not running and shows its state.

.EXAMPLE
    .\start-api.ps1 -Force
    The same, enabling the task first if it was disabled.
#>
[CmdletBinding()]
param(
    [switch]$Force,
    [int]$TimeoutSeconds = 90
)

Set-StrictMode -Version Latest
$ErrorActionPreference = 'Stop'
. (Join-Path $PSScriptRoot 'common.ps1')

if (Test-NodeRunning) {
    Write-Host 'the daemon is already running'
}
elseif (-not (Start-NodeTask -TimeoutSeconds $TimeoutSeconds -Enable:$Force)) {
    exit $StateUnreachable
}
$code = Invoke-Node state
exit $code
