<#
.SYNOPSIS
    Register the one scheduled task that runs the daemon at logon (run as administrator).

.DESCRIPTION
    Registers the task "ibkr-node": at logon of the operator's account (30 s after, so the
    network is up) it runs

        <repo>\.venv\Scripts\ibkr-node.exe --env-file "<repo>\.env" run

    (or `uv run --project <repo> ibkr-node ...` when the venv has not been created yet) in the
    repository folder. Interactive logon type, so IB Gateway's window stays reachable on the
    desktop; not elevated; no execution time limit; never a second instance (IgnoreNew);
    restarted every minute, up to 10 times, when it fails; runs on battery too.

    The daemon is its own scheduler and watchdog: it starts the gateway when the run window
    opens, stops it when the window closes, checks the heartbeat, restarts with backoff and
    reconciles after a reboot. So the seed's six tasks (IBKR-Gateway-START, IBKR-API-START,
    IBKR-API-STOP, IBKR-Gateway-STOP, IBKR-Watchdog, IBKR-Boot-Reconcile) are removed when
    present.

    For the task to start after an unattended reboot, the account must log on by itself
    (automatic logon; see the deployment guide).

    Safe to run twice: a task that already matches is left alone; one that differs is replaced
    (a running daemon keeps running; the new definition applies at its next start).

.PARAMETER Force
    Re-register the task even when it already matches.

.PARAMETER User
    The account whose logon starts the daemon and which it runs as; default the current user.
    Give it when this elevated PowerShell runs as another (administrator) account.

.EXAMPLE
    .\setup-tasks.ps1
    Registers the task for the current user and removes the seed's tasks.

.EXAMPLE
    .\setup-tasks.ps1 -Force
    Recreates the task (removes the existing one first).

.EXAMPLE
    .\setup-tasks.ps1 -User LAPTOP\trader
    Registers the task for the account "trader" from an administrator's session.
#>
[CmdletBinding()]
param(
    [switch]$Force,
    [string]$User = ''
)

Set-StrictMode -Version Latest
$ErrorActionPreference = 'Stop'
. (Join-Path $PSScriptRoot 'common.ps1')

Assert-Administrator

$restartCount = 10
$restartInterval = New-TimeSpan -Minutes 1
$logonDelay = 'PT30S'

if (-not $User) {
    $User = [System.Security.Principal.WindowsIdentity]::GetCurrent().Name
    $consoleUser = $null
    try {
        $consoleUser = (Get-CimInstance -ClassName Win32_ComputerSystem).UserName
    }
    catch {
        $consoleUser = $null
    }
    if ($consoleUser -and ($consoleUser -ne $User)) {
        Write-Host "note: this PowerShell runs as $User but $consoleUser is logged on at the console; if the daemon should run as $consoleUser, run again with -User '$consoleUser'" -ForegroundColor Yellow
    }
}

# --- the seed's tasks --------------------------------------------------------------------------
foreach ($name in $SeedTaskNames) {
    foreach ($old in @(Get-ScheduledTask -TaskName $name -ErrorAction SilentlyContinue)) {
        if ([string]$old.State -eq 'Running') {
            Stop-ScheduledTask -TaskName $old.TaskName -TaskPath $old.TaskPath
        }
        Unregister-ScheduledTask -TaskName $old.TaskName -TaskPath $old.TaskPath -Confirm:$false
        Write-Host "removed the seed's task $($old.TaskPath)$($old.TaskName) (the daemon does its work now)"
    }
}

# --- the daemon's task -------------------------------------------------------------------------
if (Test-Path -LiteralPath $VenvNodeExe -PathType Leaf) {
    $execute = $VenvNodeExe
    $taskArguments = '--env-file {0} run' -f (ConvertTo-NativeArgument $EnvFile)
}
else {
    $uv = Get-Command -Name 'uv' -CommandType Application -ErrorAction SilentlyContinue |
        Select-Object -First 1
    if ($null -eq $uv) {
        throw "neither $VenvNodeExe nor uv was found: run 'uv sync' in $RepoRoot first"
    }
    Write-Host "note: $VenvNodeExe does not exist yet; the task runs the daemon through uv. Run 'uv sync' in $RepoRoot and then setup-tasks.ps1 again to run it directly." -ForegroundColor Yellow
    $execute = $uv.Source
    $projectArgument = ConvertTo-NativeArgument $RepoRoot
    $taskArguments = 'run --project {0} ibkr-node --env-file {1} run' -f $projectArgument, (ConvertTo-NativeArgument $EnvFile)
}

$existing = Get-NodeTask
if ($null -ne $existing -and -not $Force) {
    $action = @($existing.Actions)[0]
    $userName = ($User -split '\\')[-1]
    $same = ($null -ne $action) -and
        ([string]$action.Execute -eq $execute) -and
        ([string]$action.Arguments -eq $taskArguments) -and
        ([string]$action.WorkingDirectory -eq $RepoRoot) -and
        ([string]$existing.Principal.LogonType -eq 'Interactive') -and
        (([string]$existing.Principal.UserId -split '\\')[-1] -eq $userName)
    if ($same) {
        Write-Host "scheduled task '$NodeTaskName' is up to date: $execute $taskArguments (as $User, at logon)"
        exit 0
    }
    Write-Host "scheduled task '$NodeTaskName' differs from what this script registers: replacing it"
}

$taskAction = New-ScheduledTaskAction -Execute $execute -Argument $taskArguments -WorkingDirectory $RepoRoot
$trigger = New-ScheduledTaskTrigger -AtLogOn -User $User
$trigger.Delay = $logonDelay
$principal = New-ScheduledTaskPrincipal -UserId $User -LogonType Interactive -RunLevel Limited
$settings = New-ScheduledTaskSettingsSet -RestartCount $restartCount -RestartInterval $restartInterval `
    -MultipleInstances IgnoreNew -ExecutionTimeLimit ([TimeSpan]::Zero) `
    -AllowStartIfOnBatteries -DontStopIfGoingOnBatteries -Priority 5
$null = Register-ScheduledTask -TaskName $NodeTaskName -TaskPath '\' -Action $taskAction `
    -Trigger $trigger -Principal $principal -Settings $settings -Force `
    -Description 'ibkr-node daemon: supervises IB Gateway through the run window and serves the LAN API (deploy\windows\setup-tasks.ps1)'

Write-Host "scheduled task '$NodeTaskName' registered: at logon of $User, $execute $taskArguments"
Write-Host 'if the seed''s gateway or API processes still run, stop them (they hold ports 4002 and 8000)'
Write-Host 'start the daemon now with start-api.ps1 (or log off and on); check with verify.ps1 and status.ps1'
exit 0
