<#
.SYNOPSIS
    Write IBC's config.ini for paper auto-login and restrict it to you: `ibkr-node configure ibc`.

.DESCRIPTION
    Runs `ibkr-node --env-file <repo>\.env configure ibc` on this console. It writes IBC's
    config.ini at IBC_INI (from .env; configure.ps1 sets it) with the settings the ibc launcher
    checks (TradingMode = TRADING_MODE, AcceptNonBrokerageAccountWarning=yes,
    ExistingSessionDetectedAction=primary, the command server on 127.0.0.1 at IBC_COMMAND_PORT)
    and the trusted IPs (127.0.0.1 by default) into the gateway's jts.ini.

    The IBKR username is asked (or -Username); the password is asked by the command line
    without echo. It is never printed or logged and never passes through this script.

    Then the file's ACL is restricted to the current user only (icacls /inheritance:r
    /grant:r <you>:(F)): run this as the account the scheduled task runs as, not as another
    administrator. The credentials are still plaintext on disk (an IBC limitation): use a
    dedicated paper account and BitLocker.

    Safe to run twice: the command line asks before replacing an existing config.ini (or
    refuses without -Force when it cannot ask) and keeps a backup; the ACL is restricted again
    either way. The exit code is the command line's.

.PARAMETER Username
    The IBKR (paper) username (--username). Asked when omitted.

.PARAMETER TrustedIPs
    Comma-separated addresses the gateway trusts for API connections, written to jts.ini
    (--trusted-ips); default 127.0.0.1. The node connects over loopback, so leave it.

.PARAMETER JtsIni
    The gateway's jts.ini (--jts-ini), when it is not where the command line looks for it.

.PARAMETER Force
    Replace an existing config.ini without asking (a backup is still kept) (--force).

.EXAMPLE
    .\setup-ibkr-autologin.ps1
    Asks for the username and the password, writes config.ini and restricts its ACL.

.EXAMPLE
    .\setup-ibkr-autologin.ps1 -Username mypaperuser -Force
    Re-writes config.ini (for a new password), keeping a backup of the old one.
#>
[CmdletBinding()]
param(
    [string]$Username = '',
    [string]$TrustedIPs = '',
    [string]$JtsIni = '',
    [switch]$Force
)

Set-StrictMode -Version Latest
$ErrorActionPreference = 'Stop'
. (Join-Path $PSScriptRoot 'common.ps1')

$cliArgs = @()
if ($Username) { $cliArgs += @('--username', $Username) }
if ($TrustedIPs) { $cliArgs += @('--trusted-ips', $TrustedIPs) }
if ($JtsIni) { $cliArgs += @('--jts-ini', $JtsIni) }
if ($Force) { $cliArgs += '--force' }

$code = Invoke-Node configure ibc @cliArgs

# Restrict the ACL whenever the file exists: also after a declined overwrite, so running this
# again tightens a file someone loosened.
try {
    $config = Get-NodeConfig
}
catch {
    if ($code -ne 0) { exit $code }
    throw
}
$ibcIni = Resolve-NodePath ([string](Get-ConfigValue $config 'IBC_INI'))
if ($ibcIni -and (Test-Path -LiteralPath $ibcIni -PathType Leaf)) {
    Set-OwnerOnlyAcl -Path $ibcIni
    # The backups of a replaced config.ini hold the previous password: the same ACL.
    $folder = Split-Path -Parent $ibcIni
    $pattern = (Split-Path -Leaf $ibcIni) + '.bak-*'
    foreach ($backup in @(Get-ChildItem -LiteralPath $folder -Filter $pattern -File -ErrorAction SilentlyContinue)) {
        Set-OwnerOnlyAcl -Path $backup.FullName
    }
}
elseif ($code -eq 0) {
    Write-Host "IBC_INI ($ibcIni) was not found after writing it; check IBC_INI in $EnvFile" -ForegroundColor Yellow
    exit 1
}
exit $code
