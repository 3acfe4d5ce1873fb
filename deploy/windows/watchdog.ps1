<#
.SYNOPSIS
    The seed's watchdog, for operators who still run it: start the daemon if it is not running.

.DESCRIPTION
    The daemon is its own watchdog now: it checks the gateway's heartbeat, restarts it with
    backoff (MAX restarts per hour, then a "needs human" latch), stops it outside the run window
    and reconciles after a reboot. setup-tasks.ps1 removes the seed's IBKR-Watchdog task.

    What is left for this script: `ibkr-node state`; when the daemon answers (exit 0 SERVING or
    1 another state, e.g. outside the window or in backoff) there is nothing to do. When it does
    not answer (exit 2) and its scheduled task is registered, enabled and not running, the task
    is started and the script waits for the daemon. It never restarts a running task and never
    enables a disabled one (someone disabled it on purpose). Note that it also starts a daemon
    stopped on purpose with stop-api.ps1.

    Safe to run any number of times (from Task Scheduler too). The exit code is the last
    `ibkr-node state`'s: 0 SERVING, 1 another state, 2 unreachable.

.PARAMETER TimeoutSeconds
    How long to wait for the daemon to answer after starting its task; default 90.

.EXAMPLE
    .\watchdog.ps1
#>
[CmdletBinding()]
param(
    [int]$TimeoutSeconds = 90
)

Set-StrictMode -Version Latest
$ErrorActionPreference = 'Stop'
. (Join-Path $PSScriptRoot 'common.ps1')

$code = Invoke-Node state
if ($code -ne $StateUnreachable) {
    exit $code
}

$taskState = Get-NodeTaskState
if ($taskState -eq 'NotRegistered') {
    Write-Host "the scheduled task '$NodeTaskName' is not registered: run setup-tasks.ps1 as administrator" -ForegroundColor Yellow
    exit $StateUnreachable
}
if ($taskState -eq 'Disabled') {
    Write-Host "the scheduled task '$NodeTaskName' is disabled: not starting it (start-api.ps1 -Force enables and starts it)" -ForegroundColor Yellow
    exit $StateUnreachable
}
if ($taskState -eq 'Running') {
    Write-Host "the task '$NodeTaskName' runs but the daemon does not answer: it may be starting; if this lasts, read its log and status.ps1" -ForegroundColor Yellow
    exit $StateUnreachable
}

if (-not (Start-NodeTask -TimeoutSeconds $TimeoutSeconds)) {
    exit $StateUnreachable
}
$code = Invoke-Node state
exit $code
