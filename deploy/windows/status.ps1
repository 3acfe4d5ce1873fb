<#
.SYNOPSIS
    Show the node's state (`ibkr-node state`) and its scheduled task's.

.DESCRIPTION
    Prints the daemon's state document for a person: lifecycle state and why, trading mode, run
    window and its next change, gateway, heartbeat, restart budget, whether orders can be
    placed, and the last transitions. Then the scheduled task "ibkr-node": its state, last run
    and result, and where the logs are.

    Changes nothing. The exit code is `ibkr-node state`'s: 0 SERVING, 1 another state, 2 the
    daemon does not answer.

.PARAMETER Json
    Print only the state document as JSON (`ibkr-node state --json`), for scripts.

.EXAMPLE
    .\status.ps1

.EXAMPLE
    .\status.ps1 -Json | ConvertFrom-Json
#>
[CmdletBinding()]
param(
    [switch]$Json
)

Set-StrictMode -Version Latest
$ErrorActionPreference = 'Stop'
. (Join-Path $PSScriptRoot 'common.ps1')

if ($Json) {
    $code = Invoke-Node state --json
    exit $code
}

$code = Invoke-Node state

Write-Host ''
$task = Get-NodeTask
if ($null -eq $task) {
    Write-Host "task       '$NodeTaskName' is not registered (setup-tasks.ps1)"
}
else {
    $info = Get-ScheduledTaskInfo -TaskName $task.TaskName -TaskPath $task.TaskPath
    $value = [int64]$info.LastTaskResult
    if ($value -lt 0) { $value += 4294967296 }
    $result = '0x{0:X}' -f $value
    $meaning = @{ '0x0' = 'success'; '0x41301' = 'running'; '0x41303' = 'not run yet';
        '0x41306' = 'terminated'; '0xC000013A' = 'ended by Ctrl+C or a closed window' }
    if ($meaning.ContainsKey($result)) { $result = "$result ($($meaning[$result]))" }
    Write-Host "task       '$NodeTaskName' $($task.State), last run $($info.LastRunTime), last result $result"
}
try {
    $config = Get-NodeConfig
    $logs = Get-ConfigValue $config 'LOG_FILE_PATH'
    if ($null -ne $logs) {
        Write-Host "logs       $(Resolve-NodePath ([string]$logs))"
    }
}
catch {
    Write-Host "config     $($_.Exception.Message)" -ForegroundColor Yellow
}
exit $code
