<#
.SYNOPSIS
    Stop the daemon (the API and its gateway): `ibkr-node ctl shutdown`.

.DESCRIPTION
    Asks the daemon to stop the gateway and exit with code 0. Because the exit is a success, the
    scheduled task's restart-on-failure leaves it stopped; it starts again at the next logon or
    with start-api.ps1. To stop only the gateway and keep the API up, use stop-gateway.ps1.

    Safe to run twice: when the daemon is not running the script says so and exits 0 (but exits
    2 when the task runs and the daemon does not answer, e.g. a refused API key). Otherwise the
    exit code is the command line's.

.EXAMPLE
    .\stop-api.ps1
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
    Write-Host 'the daemon is not running: nothing to stop'
    exit 0
}
$code = Invoke-Node ctl shutdown
exit $code
