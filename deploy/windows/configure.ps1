<#
.SYNOPSIS
    Write the node's .env for this laptop (the setup wizard): `ibkr-node configure`.

.DESCRIPTION
    Runs `ibkr-node --env-file <repo>\.env configure` on this console. Interactive by default:
    each question shows its default or the value already in .env, and Enter keeps it. It detects
    the LAN IP and asks for the Pi's IP, the sync folder (Google Drive), the gateway launcher
    (ibc by default), the IB Gateway and IBC folders and the trading mode (paper by default).

    It writes .env (paper, ORDERS_ENABLED=false unless you change them later), never replacing an
    existing .env without asking (or -Force with -NonInteractive), always keeping a backup
    (.env.bak-YYYYmmdd-HHMMSS), and creates the folders (STATE_DIR, the sync folder's logs,
    secrets\).

    The IBKR credentials are not asked here: setup-ibkr-autologin.ps1 writes them to IBC's
    config.ini. Administrator rights are not needed (and not wanted: the daemon runs as you).

    Safe to run twice: the second run shows the current values as defaults and asks before
    replacing .env. The exit code is the command line's (0 = written).

.PARAMETER NonInteractive
    Never prompt: take the values from the other parameters, then the existing .env, then the
    defaults (--non-interactive).

.PARAMETER Force
    With -NonInteractive, replace an existing .env (a backup is still kept) (--force).

.PARAMETER LanIP
    This laptop's LAN address, the API's bind address API_BIND_HOST (--lan-ip). Detected when
    omitted.

.PARAMETER PiIP
    The Raspberry Pi's address, PI_IP: the client allowed to call the API (--pi-ip).

.PARAMETER SyncFolder
    The Google Drive (or other synced) folder for logs and snapshots, GDRIVE_BASE_PATH
    (--sync-folder).

.PARAMETER StateDir
    The node's state folder, STATE_DIR (--state-dir); default %ProgramData%\mm-ibkr-gateway.

.PARAMETER ApiPort
    The API port, API_PORT (--api-port); default 8000.

.PARAMETER Launcher
    How the node starts IB Gateway, GATEWAY_LAUNCHER (--launcher): ibc (default, auto-login),
    exe (manual login), external (someone else runs it) or sim (the simulator, fake money).

.PARAMETER GatewayPath
    The IB Gateway installation folder, IBKR_GATEWAY_PATH (--gateway-path), e.g. C:\Jts\ibgateway\1030.

.PARAMETER IbcPath
    The IBC installation folder, IBC_PATH (--ibc-path), e.g. C:\IBC.

.PARAMETER IbcIni
    IBC's config.ini, IBC_INI (--ibc-ini); default <IbcPath>\config.ini.

.PARAMETER TradingMode
    paper (default) or live, TRADING_MODE (--trading-mode). Live orders need more than this.

.EXAMPLE
    .\configure.ps1
    The interactive wizard.

.EXAMPLE
    .\configure.ps1 -NonInteractive -PiIP 192.168.1.50 -SyncFolder "G:\My Drive\ibkr-node" -GatewayPath C:\Jts\ibgateway\1030 -IbcPath C:\IBC
    Write .env without questions (refuses to replace an existing .env).

.EXAMPLE
    .\configure.ps1 -NonInteractive -Force -PiIP 192.168.1.51
    Change the Pi's address in an existing .env, keeping everything else (and a backup).
#>
[CmdletBinding()]
param(
    [switch]$NonInteractive,
    [switch]$Force,
    [string]$LanIP = '',
    [string]$PiIP = '',
    [string]$SyncFolder = '',
    [string]$StateDir = '',
    [ValidateRange(1, 65535)][int]$ApiPort = 0,
    [ValidateSet('ibc', 'exe', 'external', 'sim')][string]$Launcher = '',
    [string]$GatewayPath = '',
    [string]$IbcPath = '',
    [string]$IbcIni = '',
    [ValidateSet('paper', 'live')][string]$TradingMode = ''
)

Set-StrictMode -Version Latest
$ErrorActionPreference = 'Stop'
. (Join-Path $PSScriptRoot 'common.ps1')

if (Test-Administrator) {
    Write-Host ("note: this PowerShell is elevated; configure does not need it. Folders created " +
        "now belong to Administrators, while the daemon runs as you without elevation.") -ForegroundColor Yellow
}

$cliArgs = @()
if ($NonInteractive) { $cliArgs += '--non-interactive' }
if ($Force) { $cliArgs += '--force' }
if ($LanIP) { $cliArgs += @('--lan-ip', $LanIP) }
if ($PiIP) { $cliArgs += @('--pi-ip', $PiIP) }
if ($SyncFolder) { $cliArgs += @('--sync-folder', $SyncFolder) }
if ($StateDir) { $cliArgs += @('--state-dir', $StateDir) }
if ($ApiPort -gt 0) { $cliArgs += @('--api-port', [string]$ApiPort) }
if ($Launcher) { $cliArgs += @('--launcher', $Launcher) }
if ($GatewayPath) { $cliArgs += @('--gateway-path', $GatewayPath) }
if ($IbcPath) { $cliArgs += @('--ibc-path', $IbcPath) }
if ($IbcIni) { $cliArgs += @('--ibc-ini', $IbcIni) }
if ($TradingMode) { $cliArgs += @('--trading-mode', $TradingMode) }

$code = Invoke-Node configure @cliArgs
if ($code -eq 0) {
    Write-Host ''
    Write-Host 'next: setup-ibkr-autologin.ps1, then (as administrator) setup-firewall.ps1 and setup-tasks.ps1, then generate-api-key.ps1 and verify.ps1'
}
exit $code
