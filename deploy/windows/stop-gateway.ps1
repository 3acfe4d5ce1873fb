<#
.SYNOPSIS
    Stop IB Gateway and keep it stopped: `ibkr-node ctl stop`.

.DESCRIPTION
    Asks the running daemon to stop the gateway (tidily: IBC's STOP command, then a kill after
    GATEWAY_STOP_TIMEOUT) and to stay OFF until `ibkr-node ctl start` (start-gateway.ps1), even
    across a daemon restart or the next run window. The daemon itself keeps running and keeps
    serving /livez and the state; use stop-api.ps1 to end the daemon.

    Safe to run twice. When the daemon is not running there is no gateway of its own to stop:
    the script says so and exits 0 (but exits 2 when the task runs and the daemon does not
    answer, e.g. a refused API key). Otherwise the exit code is the command line's.

.EXAMPLE
    .\stop-gateway.ps1
#>
[CmdletBinding()]
param()

Set-StrictMode -Version Latest
$ErrorActionPreference = 'Stop'
. (Join-Path $PSScriptRoot 'common.ps1')

if (-not (Test-NodeRunning)) {
    if ((Get-NodeTaskState) -eq 'Running') {
        Write-Host "the task '$NodeTaskName' runs but the daemon does not answer: $script:NodeStderr" -ForegroundColor Yellow
        exit $StateUnreachable
    }
    Write-Host 'the daemon is not running, so neither is its gateway: nothing to stop'
    exit 0
}
$code = Invoke-Node ctl stop
exit $code
