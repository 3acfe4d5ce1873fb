<#
.SYNOPSIS
    Shared helpers for the ibkr-node deployment scripts (dot-sourced, not run directly).

.DESCRIPTION
    Every script in deploy\windows dot-sources this file:

        . (Join-Path $PSScriptRoot 'common.ps1')

    It finds the repository root (the folder two levels up that holds pyproject.toml), the env
    file ($RepoRoot\.env) and the ibkr-node command line ($RepoRoot\.venv\Scripts\ibkr-node.exe
    when present, else `uv run --project $RepoRoot ibkr-node`), and defines:

      Invoke-Node         runs `ibkr-node --env-file $EnvFile <arguments>` on this console
                          (prompts and output go straight to the operator) and returns the exit
                          code (also left in $LASTEXITCODE).
      Invoke-NodeCapture  the same, quietly: returns the standard output lines; the exit code is
                          in $LASTEXITCODE and the standard error text in $script:NodeStderr.
      Get-NodeConfig      `configure show --json` as an object (no secrets: never API_KEY).
      Get-ConfigValue     one value of that object, $null when absent.
      Test-NodeRunning    $true when `ibkr-node state` reaches the daemon (exit code 0 or 1).
      Start-NodeTask      starts the scheduled task and waits for the daemon to answer.
      Assert-Administrator, Set-OwnerOnlyAcl, Write-Check, Resolve-NodePath.

    Windows PowerShell 5.1 compatible. All logic beyond process and Windows plumbing lives in
    the Python command line, where it is tested.

.EXAMPLE
    . (Join-Path $PSScriptRoot 'common.ps1')
    $code = Invoke-Node state
    exit $code
#>

Set-StrictMode -Version Latest
$ErrorActionPreference = 'Stop'

# --- names shared by the scripts --------------------------------------------------------------

# The one scheduled task that runs the daemon (setup-tasks.ps1).
$NodeTaskName = 'ibkr-node'
# The firewall rule that lets the Pi reach the API port (setup-firewall.ps1); -Name is its id.
$FirewallRuleName = 'ibkr-node-api'
$FirewallRuleDisplayName = 'ibkr-node API (from the Pi)'
$FirewallRuleGroup = 'ibkr-node'
# The seed deployment's six tasks, replaced by the daemon's lifecycle (DESIGN.md section 10).
$SeedTaskNames = @(
    'IBKR-Gateway-START',
    'IBKR-API-START',
    'IBKR-API-STOP',
    'IBKR-Gateway-STOP',
    'IBKR-Watchdog',
    'IBKR-Boot-Reconcile'
)
# `ibkr-node state` exit codes.
$StateServing = 0
$StateNotServing = 1
$StateUnreachable = 2
# The standard error text of the last Invoke-NodeCapture.
$NodeStderr = ''

function Find-RepoRoot {
    $candidate = Split-Path -Parent (Split-Path -Parent $PSScriptRoot)
    if (-not (Test-Path -LiteralPath (Join-Path $candidate 'pyproject.toml') -PathType Leaf)) {
        throw "cannot find the ibkr-node repository: no pyproject.toml in $candidate (these scripts must stay in <repo>\deploy\windows)"
    }
    return (Resolve-Path -LiteralPath $candidate).ProviderPath
}

$RepoRoot = Find-RepoRoot
$EnvFile = Join-Path $RepoRoot '.env'
$VenvNodeExe = Join-Path $RepoRoot '.venv\Scripts\ibkr-node.exe'

function Get-NodeCommand {
    <# The program and the arguments before ours: the venv's ibkr-node.exe, else uv run. #>
    if (Test-Path -LiteralPath $VenvNodeExe -PathType Leaf) {
        return , @($VenvNodeExe)
    }
    $uv = Get-Command -Name 'uv' -CommandType Application -ErrorAction SilentlyContinue |
        Select-Object -First 1
    if ($null -eq $uv) {
        throw "neither $VenvNodeExe nor uv was found: install uv (https://docs.astral.sh/uv/) and run 'uv sync' in $RepoRoot"
    }
    return , @($uv.Source, 'run', '--project', $RepoRoot, 'ibkr-node')
}

function ConvertTo-NativeArgument {
    <# Quote one argument the way the C runtime (and so Python and uv) splits a command line. #>
    param([AllowEmptyString()][string]$Value)
    if ($Value.Length -gt 0 -and $Value -notmatch '[\s"]') {
        return $Value
    }
    # Backslashes before a quote are doubled and the quote escaped; trailing ones doubled.
    $escaped = [regex]::Replace($Value, '(\\*)"', '$1$1\"')
    $escaped = [regex]::Replace($escaped, '(\\+)$', '$1$1')
    return '"' + $escaped + '"'
}

function Start-NodeProcess {
    <# Run the CLI with --env-file first; optionally send its output to files. Returns the exit code. #>
    [CmdletBinding()]
    param(
        [string[]]$Arguments = @(),
        [string]$StdoutPath = '',
        [string]$StderrPath = ''
    )
    $command = Get-NodeCommand
    $argv = @()
    if ($command.Count -gt 1) {
        $argv += $command[1..($command.Count - 1)]
    }
    $argv += @('--env-file', $EnvFile)
    $argv += $Arguments
    $line = ($argv | ForEach-Object { ConvertTo-NativeArgument ([string]$_) }) -join ' '
    Write-Verbose "running: $($command[0]) $line"
    $startArgs = @{
        FilePath     = $command[0]
        ArgumentList = $line
        NoNewWindow  = $true
        PassThru     = $true
    }
    if ($StdoutPath) { $startArgs['RedirectStandardOutput'] = $StdoutPath }
    if ($StderrPath) { $startArgs['RedirectStandardError'] = $StderrPath }
    $process = Start-Process @startArgs
    # Holding the handle keeps ExitCode readable after the process ends (a .NET quirk).
    $null = $process.Handle
    $process.WaitForExit()
    $code = $process.ExitCode
    if ($null -eq $code) { $code = 1 }
    $global:LASTEXITCODE = $code
    return [int]$code
}

function Invoke-Node {
    <#
    .SYNOPSIS
        Run `ibkr-node --env-file $EnvFile <arguments>` on this console; return its exit code.
    .DESCRIPTION
        The CLI shares the console, so its questions (configure) and hidden password prompts
        (configure ibc) work, and its output is shown, not returned: the only thing this
        function returns is the exit code. Write each call as literal words, e.g.
        `$code = Invoke-Node ctl start --force`, so the tests can check them against the CLI.
    #>
    $arguments = @($args | ForEach-Object { [string]$_ })
    return Start-NodeProcess -Arguments $arguments
}

function Invoke-NodeCapture {
    <#
    .SYNOPSIS
        Run the CLI quietly; return its standard output lines.
    .DESCRIPTION
        The exit code is left in $LASTEXITCODE, the standard error text in $script:NodeStderr.
        Output is read as UTF-8 (PYTHONIOENCODING is set for the child), so paths with accents
        survive.
    #>
    $arguments = @($args | ForEach-Object { [string]$_ })
    $stdout = [System.IO.Path]::GetTempFileName()
    $stderr = [System.IO.Path]::GetTempFileName()
    $previousEncoding = $env:PYTHONIOENCODING
    try {
        $env:PYTHONIOENCODING = 'utf-8'
        $null = Start-NodeProcess -Arguments $arguments -StdoutPath $stdout -StderrPath $stderr
        $code = $global:LASTEXITCODE
        $script:NodeStderr = [System.IO.File]::ReadAllText($stderr, [System.Text.Encoding]::UTF8).Trim()
        $lines = @([System.IO.File]::ReadAllLines($stdout, [System.Text.Encoding]::UTF8))
        $global:LASTEXITCODE = $code
        return , $lines
    }
    finally {
        $env:PYTHONIOENCODING = $previousEncoding
        Remove-Item -LiteralPath $stdout, $stderr -Force -ErrorAction SilentlyContinue
    }
}

function Get-NodeConfig {
    <#
    .SYNOPSIS
        The resolved settings the scripts need, from `ibkr-node configure show --json`.
    .DESCRIPTION
        Throws with the CLI's lines (one per bad variable) when .env is missing or invalid.
    #>
    $lines = Invoke-NodeCapture configure show --json
    if ($LASTEXITCODE -ne 0) {
        $detail = $script:NodeStderr
        if (-not $detail) { $detail = "exit code $LASTEXITCODE" }
        throw "cannot read the configuration from ${EnvFile}:`n$detail`n(run configure.ps1 to write or fix it)"
    }
    return (($lines -join "`n") | ConvertFrom-Json)
}

function Get-ConfigValue {
    <# One value of Get-NodeConfig's object; $null when the key is absent or empty. #>
    param($Config, [string]$Name)
    if ($null -eq $Config) { return $null }
    $property = $Config.PSObject.Properties[$Name]
    if ($null -eq $property) { return $null }
    $value = $property.Value
    if ($value -is [string] -and $value.Trim() -eq '') { return $null }
    return $value
}

function Resolve-NodePath {
    <# A path from the configuration; a relative one resolves against the env file's folder. #>
    param([string]$Path)
    if (-not $Path) { return $null }
    if ([System.IO.Path]::IsPathRooted($Path)) { return $Path }
    return (Join-Path (Split-Path -Parent $EnvFile) $Path)
}

function Split-AddressList {
    <# "a,b" strings or arrays of them -> a flat list of trimmed addresses. #>
    param($Value)
    $result = @()
    foreach ($item in @($Value)) {
        if ($null -eq $item) { continue }
        foreach ($part in ([string]$item).Split(',')) {
            $trimmed = $part.Trim()
            if ($trimmed) { $result += $trimmed }
        }
    }
    return , $result
}

function Test-NodeRunning {
    <# $true when `ibkr-node state` reaches the daemon (exit 0 SERVING or 1 another state). #>
    $null = Invoke-NodeCapture state --json
    return ($LASTEXITCODE -ne $StateUnreachable)
}

function Get-NodeTask {
    return (Get-ScheduledTask -TaskName $NodeTaskName -ErrorAction SilentlyContinue |
        Select-Object -First 1)
}

function Get-NodeTaskState {
    <# The scheduled task's state (Ready, Running, Disabled, ...) or NotRegistered. #>
    $task = Get-NodeTask
    if ($null -eq $task) { return 'NotRegistered' }
    return [string]$task.State
}

function Start-NodeTask {
    <#
    .SYNOPSIS
        Start the daemon's scheduled task and wait until the daemon answers.
    .DESCRIPTION
        Returns $true when the daemon answers within TimeoutSeconds. The task never runs twice
        (MultipleInstances IgnoreNew), so starting it while it runs does nothing. A disabled
        task is enabled only with -Enable.
    #>
    [CmdletBinding()]
    param(
        [int]$TimeoutSeconds = 90,
        [switch]$Enable
    )
    $task = Get-NodeTask
    if ($null -eq $task) {
        throw "the scheduled task '$NodeTaskName' is not registered: run setup-tasks.ps1 (as administrator) first"
    }
    if ([string]$task.State -eq 'Disabled') {
        if (-not $Enable) {
            throw "the scheduled task '$NodeTaskName' is disabled: enable it in Task Scheduler or add -Force"
        }
        Write-Host "enabling the scheduled task '$NodeTaskName'"
        $null = Enable-ScheduledTask -TaskName $NodeTaskName -TaskPath $task.TaskPath
    }
    Write-Host "starting the scheduled task '$NodeTaskName' (the daemon)"
    Start-ScheduledTask -TaskName $NodeTaskName -TaskPath $task.TaskPath
    $started = Get-Date
    $deadline = $started.AddSeconds($TimeoutSeconds)
    while ($true) {
        if (Test-NodeRunning) { return $true }
        if ((Get-Date) -ge $deadline) { break }
        if (((Get-Date) - $started).TotalSeconds -ge 10 -and (Get-NodeTaskState) -ne 'Running') {
            # The daemon exited (e.g. an invalid .env or a port in use): no point waiting.
            $info = Get-ScheduledTaskInfo -TaskName $NodeTaskName -TaskPath $task.TaskPath
            Write-Host ("the task '$NodeTaskName' is no longer running (last result 0x{0:X}): " -f
                [int64]$info.LastTaskResult) -ForegroundColor Yellow
            Write-Host "run 'ibkr-node --env-file $EnvFile run' in a console to see why, or read the daemon's log" -ForegroundColor Yellow
            return $false
        }
        Start-Sleep -Seconds 2
    }
    Write-Host "the daemon did not answer within $TimeoutSeconds s: $script:NodeStderr" -ForegroundColor Yellow
    Write-Host "look at the task's last result (status.ps1) and the daemon's log folder" -ForegroundColor Yellow
    return $false
}

function Test-Administrator {
    $identity = [System.Security.Principal.WindowsIdentity]::GetCurrent()
    $principal = New-Object System.Security.Principal.WindowsPrincipal($identity)
    return $principal.IsInRole([System.Security.Principal.WindowsBuiltInRole]::Administrator)
}

function Assert-Administrator {
    <# Stop the script (exit 1) unless it runs elevated. #>
    if (-not (Test-Administrator)) {
        [Console]::Error.WriteLine(
            "$(Split-Path -Leaf $MyInvocation.PSCommandPath) needs an elevated PowerShell: right-click PowerShell, 'Run as administrator', and run it again")
        exit 1
    }
}

function Get-CurrentUserSid {
    return [System.Security.Principal.WindowsIdentity]::GetCurrent().User.Value
}

function Set-OwnerOnlyAcl {
    <#
    .SYNOPSIS
        Let only the current user (full control) reach a file: no inherited or other entries.
    .DESCRIPTION
        icacls /inheritance:r /grant:r "<user>:(F)", then removes any explicit entry left for
        someone else. Safe to run again on the same file.
    #>
    [CmdletBinding()]
    param([Parameter(Mandatory = $true)][string]$Path)
    $sid = Get-CurrentUserSid
    $user = [System.Security.Principal.WindowsIdentity]::GetCurrent().Name
    $null = & icacls.exe $Path /inheritance:r /grant:r "*$($sid):(F)"
    if ($LASTEXITCODE -ne 0) {
        throw "icacls could not restrict $Path (exit code $LASTEXITCODE)"
    }
    foreach ($rule in @((Get-Acl -LiteralPath $Path).Access)) {
        $ruleSid = $null
        try {
            $ruleSid = $rule.IdentityReference.Translate(
                [System.Security.Principal.SecurityIdentifier]).Value
        }
        catch {
            $ruleSid = [string]$rule.IdentityReference
        }
        if ($ruleSid -ne $sid) {
            $account = [string]$ruleSid
            if ($account.StartsWith('S-')) { $account = "*$account" }
            $null = & icacls.exe $Path /remove $account
            if ($LASTEXITCODE -ne 0) {
                throw "icacls could not remove $($rule.IdentityReference) from $Path"
            }
        }
    }
    Write-Host "$Path is readable by $user only"
}

function Write-Check {
    <# One verify-style line: PASS/FAIL/WARN <check>: <detail>. #>
    param(
        [ValidateSet('PASS', 'FAIL', 'WARN')][string]$Status,
        [string]$Check,
        [string]$Detail
    )
    $color = @{ PASS = 'Green'; FAIL = 'Red'; WARN = 'Yellow' }[$Status]
    Write-Host "$Status ${Check}: $Detail" -ForegroundColor $color
}
