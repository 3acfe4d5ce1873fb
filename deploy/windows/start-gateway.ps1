<#
.SYNOPSIS
    Start IB Gateway now: `ibkr-node ctl start` (-Force: `ctl start --force`).

.DESCRIPTION
    Asks the running daemon to start the gateway. When the daemon is not running (`ibkr-node
    state` exits 2), the scheduled task is started first and the script waits for the daemon
    to answer.

    Without -Force the run window still rules: inside it the gateway starts (and a previous
    `ctl stop`, e.g. from stop-gateway.ps1, is cleared); outside it the daemon says so and waits
    for the window. With -Force the window is held open until `ibkr-node ctl release` or
    FORCE_MAX_HOURS (12 by default), for testing outside market hours.

    Safe to run twice: starting a gateway that runs changes nothing. The exit code is the
    command line's (0 = accepted; 2 = the daemon could not be reached).

.PARAMETER Force
    Ignore the run window (`ctl start --force`) until `ibkr-node ctl release` or FORCE_MAX_HOURS.

.PARAMETER TimeoutSeconds
    How long to wait for the daemon to answer after starting its task; default 90.

.EXAMPLE
    .\start-gateway.ps1
    Starts the gateway now if the run window is open.

.EXAMPLE
    .\start-gateway.ps1 -Force
    Starts the gateway whatever the time (testing); end it with `ibkr-node ctl release`.
#>
[CmdletBinding()]
param(
    [switch]$Force,
    [int]$TimeoutSeconds = 90
)

Set-StrictMode -Version Latest
$ErrorActionPreference = 'Stop'
. (Join-Path $PSScriptRoot 'common.ps1')

if (-not (Test-NodeRunning)) {
    Write-Host 'the daemon is not running'
    if (-not (Start-NodeTask -TimeoutSeconds $TimeoutSeconds)) {
        exit $StateUnreachable
    }
}

if ($Force) {
    $code = Invoke-Node ctl start --force
}
else {
    $code = Invoke-Node ctl start
}
exit $code
