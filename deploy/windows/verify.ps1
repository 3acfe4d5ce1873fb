<#
.SYNOPSIS
    Check the deployment: `ibkr-node verify` plus what only Windows can tell.

.DESCRIPTION
    First `ibkr-node verify`: configuration valid, paths writable, gateway and IBC installed,
    ports free or held by the node, API key present, sync folder present, timezone known and,
    when the daemon runs, the API answering. One line each: PASS, or FAIL with the fix (WARN for
    advisories).

    Then the Windows checks, in the same form:
      - the scheduled task "ibkr-node" is registered, enabled and points at an existing program;
        none of the seed's six tasks is left;
      - the firewall rule allows API_PORT from PI_IP;
      - the power plan never sleeps or hibernates on AC power (and, as a warning, closing the
        lid on AC does nothing);
      - automatic logon is on (warning: without it the task waits for someone to log on after
        a reboot);
      - the API key file and IBC's config.ini are readable by you only (warning).

    Run it from a normal (not elevated) PowerShell as the account the task runs as: the daemon
    runs without elevation, so "paths writable" should be checked the same way.

    Exit code: the command line's when it is not 0 (1 = a check failed, 2 = the configuration
    is invalid), else 1 when a Windows check failed, else 0. Changes nothing: safe to run any
    number of times.

.EXAMPLE
    .\verify.ps1
#>
[CmdletBinding()]
param()

Set-StrictMode -Version Latest
$ErrorActionPreference = 'Stop'
. (Join-Path $PSScriptRoot 'common.ps1')

$script:WindowsFailed = $false

function Write-WindowsCheck {
    param([string]$Status, [string]$Check, [string]$Detail)
    if ($Status -eq 'FAIL') { $script:WindowsFailed = $true }
    Write-Check -Status $Status -Check $Check -Detail $Detail
}

function Get-AcPowerIndex {
    <# The AC value of a power setting of the active plan, $null when powercfg cannot say. #>
    param([string]$Subgroup, [string]$Setting)
    # A setting this machine lacks (no lid) is an error message, not a reason to stop.
    $ErrorActionPreference = 'Continue'
    $lines = @(& powercfg.exe /query SCHEME_CURRENT $Subgroup $Setting 2>&1 | ForEach-Object { [string]$_ })
    if ($LASTEXITCODE -ne 0) { return $null }
    # The last two hexadecimal values are the current AC and DC indexes (labels are localized).
    $values = @($lines | Where-Object { $_ -match ':\s*0x([0-9a-fA-F]+)\s*$' } |
        ForEach-Object { [Convert]::ToInt64(($_ -replace '^.*:\s*0x', '').Trim(), 16) })
    if ($values.Count -lt 2) { return $null }
    return $values[$values.Count - 2]
}

function Test-OwnerOnly {
    <# WARN when a file grants access to anyone but the current user. #>
    param([string]$Check, [string]$Path, [string]$Fix)
    if (-not $Path -or -not (Test-Path -LiteralPath $Path -PathType Leaf)) { return }
    $sid = Get-CurrentUserSid
    $others = @()
    foreach ($rule in @((Get-Acl -LiteralPath $Path).Access)) {
        if ([string]$rule.AccessControlType -ne 'Allow') { continue }
        $ruleSid = $null
        try {
            $ruleSid = $rule.IdentityReference.Translate(
                [System.Security.Principal.SecurityIdentifier]).Value
        }
        catch {
            $ruleSid = [string]$rule.IdentityReference
        }
        if ($ruleSid -ne $sid) { $others += [string]$rule.IdentityReference }
    }
    if ($others.Count -gt 0) {
        Write-WindowsCheck WARN $Check "$Path is readable by $($others -join ', ') -> $Fix"
    }
    else {
        Write-WindowsCheck PASS $Check "$Path is readable by you only"
    }
}

$code = Invoke-Node verify

Write-Host ''
Write-Host 'Windows checks:'

if (Test-Administrator) {
    Write-WindowsCheck WARN 'elevation' 'this PowerShell is elevated but the daemon is not -> run verify.ps1 from a normal PowerShell to check what the daemon can write'
}

# --- the scheduled task ------------------------------------------------------------------------
$task = Get-NodeTask
if ($null -eq $task) {
    Write-WindowsCheck FAIL 'scheduled task' "'$NodeTaskName' is not registered -> run setup-tasks.ps1 as administrator"
}
elseif ([string]$task.State -eq 'Disabled') {
    Write-WindowsCheck FAIL 'scheduled task' "'$NodeTaskName' is disabled -> enable it in Task Scheduler, or start-api.ps1 -Force"
}
else {
    $action = @($task.Actions)[0]
    if ($null -eq $action -or -not (Test-Path -LiteralPath ([string]$action.Execute) -PathType Leaf)) {
        Write-WindowsCheck FAIL 'scheduled task' "'$NodeTaskName' runs a program that does not exist -> run setup-tasks.ps1 -Force as administrator"
    }
    else {
        Write-WindowsCheck PASS 'scheduled task' "'$NodeTaskName' ($($task.State)) at logon of $($task.Principal.UserId): $($action.Execute) $($action.Arguments)"
    }
}
foreach ($name in $SeedTaskNames) {
    if ($null -ne (Get-ScheduledTask -TaskName $name -ErrorAction SilentlyContinue)) {
        Write-WindowsCheck WARN 'seed tasks' "the seed's task $name is still registered and fights the daemon -> run setup-tasks.ps1 as administrator"
    }
}

# --- the firewall rule -------------------------------------------------------------------------
$config = $null
try {
    $config = Get-NodeConfig
}
catch {
    Write-WindowsCheck FAIL 'firewall' 'cannot read the configuration (see above) -> fix .env with configure.ps1'
}
if ($null -ne $config) {
    $port = [string](Get-ConfigValue $config 'API_PORT')
    $piIP = Get-ConfigValue $config 'PI_IP'
    $rule = Get-NetFirewallRule -Name $FirewallRuleName -ErrorAction SilentlyContinue
    if ($null -eq $rule) {
        Write-WindowsCheck FAIL 'firewall' "no rule '$FirewallRuleDisplayName' -> run setup-firewall.ps1 as administrator"
    }
    else {
        $ports = @(($rule | Get-NetFirewallPortFilter).LocalPort | ForEach-Object { [string]$_ })
        $remote = @(($rule | Get-NetFirewallAddressFilter).RemoteAddress | ForEach-Object { [string]$_ })
        if ([string]$rule.Enabled -ne 'True') {
            Write-WindowsCheck FAIL 'firewall' "rule '$FirewallRuleDisplayName' is disabled -> run setup-firewall.ps1 -Force as administrator"
        }
        elseif ($ports -notcontains $port) {
            Write-WindowsCheck FAIL 'firewall' "rule '$FirewallRuleDisplayName' allows port $($ports -join ',') but API_PORT is $port -> run setup-firewall.ps1 -Force as administrator"
        }
        elseif ($piIP -and ($remote -notcontains [string]$piIP)) {
            Write-WindowsCheck FAIL 'firewall' "rule '$FirewallRuleDisplayName' does not allow PI_IP $piIP -> run setup-firewall.ps1 -Force as administrator"
        }
        else {
            Write-WindowsCheck PASS 'firewall' "TCP $port allowed from $($remote -join ', ')"
        }
    }
    Test-OwnerOnly 'api key ACL' (Resolve-NodePath ([string](Get-ConfigValue $config 'API_KEY_FILE'))) 'run generate-api-key.ps1'
    if ([string](Get-ConfigValue $config 'GATEWAY_LAUNCHER') -eq 'ibc') {
        Test-OwnerOnly 'IBC config ACL' (Resolve-NodePath ([string](Get-ConfigValue $config 'IBC_INI'))) 'run setup-ibkr-autologin.ps1'
    }
}

# --- power -------------------------------------------------------------------------------------
$sleepProblems = @()
$standby = Get-AcPowerIndex 'SUB_SLEEP' 'STANDBYIDLE'
$hibernate = Get-AcPowerIndex 'SUB_SLEEP' 'HIBERNATEIDLE'
if ($null -eq $standby -or $null -eq $hibernate) {
    Write-WindowsCheck WARN 'power' 'powercfg did not report the sleep timeouts -> check Settings > System > Power: never sleep on AC'
}
else {
    if ($standby -ne 0) { $sleepProblems += "sleeps after $([int]($standby / 60)) min" }
    if ($hibernate -ne 0) { $sleepProblems += "hibernates after $([int]($hibernate / 60)) min" }
    if ($sleepProblems.Count -gt 0) {
        Write-WindowsCheck FAIL 'power' "on AC power the laptop $($sleepProblems -join ' and ') -> powercfg /change standby-timeout-ac 0; powercfg /change hibernate-timeout-ac 0"
    }
    else {
        Write-WindowsCheck PASS 'power' 'never sleeps or hibernates on AC power'
    }
}
$lid = Get-AcPowerIndex 'SUB_BUTTONS' 'LIDACTION'
if ($null -ne $lid -and $lid -ne 0) {
    Write-WindowsCheck WARN 'lid' 'closing the lid on AC power does not "do nothing" -> powercfg /setacvalueindex SCHEME_CURRENT SUB_BUTTONS LIDACTION 0; powercfg /setactive SCHEME_CURRENT'
}

# --- automatic logon ---------------------------------------------------------------------------
$winlogon = Get-ItemProperty -Path 'HKLM:\SOFTWARE\Microsoft\Windows NT\CurrentVersion\Winlogon' -ErrorAction SilentlyContinue
$autoLogon = $null
if ($null -ne $winlogon -and $null -ne $winlogon.PSObject.Properties['AutoAdminLogon']) {
    $autoLogon = [string]$winlogon.AutoAdminLogon
}
if ($autoLogon -eq '1') {
    Write-WindowsCheck PASS 'automatic logon' 'on: the task starts after an unattended reboot'
}
else {
    Write-WindowsCheck WARN 'automatic logon' 'off: after a reboot the daemon waits until someone logs on -> see the deployment guide (Sysinternals Autologon)'
}

if ($code -ne 0) { exit $code }
if ($script:WindowsFailed) { exit 1 }
exit 0
