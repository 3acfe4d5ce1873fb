<#
.SYNOPSIS
    Generate the API key the Pi sends (secrets\api_key.txt), readable by you only: `ibkr-node keygen`.

.DESCRIPTION
    Runs `ibkr-node keygen`, which writes a strong random key to API_KEY_FILE (default
    secrets\api_key.txt in the repository, outside git) and prints it once: copy it to the Pi
    securely (not by e-mail or chat). Then restricts the file's ACL to the current user (run
    this as the account the scheduled task runs as).

    -Rotate writes a new current key and keeps the previous one on the file's second line; the
    previous key stays valid until the next rotation, so the Pi can switch without downtime.
    The daemon re-reads the file by itself (no restart).

    Safe to run twice: without -Rotate an existing key is kept (and its ACL restricted again).
    The exit code is the command line's.

.PARAMETER Rotate
    Replace the current key (`keygen --rotate`); the old key stays valid until the next rotation.

.EXAMPLE
    .\generate-api-key.ps1
    Creates the first key and prints it.

.EXAMPLE
    .\generate-api-key.ps1 -Rotate
    Rotates: prints the new key; give it to the Pi, then rotate again later to retire the old one.
#>
[CmdletBinding()]
param(
    [switch]$Rotate
)

Set-StrictMode -Version Latest
$ErrorActionPreference = 'Stop'
. (Join-Path $PSScriptRoot 'common.ps1')

$config = Get-NodeConfig
$keyFile = Resolve-NodePath ([string](Get-ConfigValue $config 'API_KEY_FILE'))
if (-not $keyFile) {
    throw "configure show did not give API_KEY_FILE; check $EnvFile"
}

if (-not $Rotate -and (Test-Path -LiteralPath $keyFile -PathType Leaf)) {
    Write-Host "$keyFile already holds a key: kept. Use -Rotate to replace it (the old key stays valid until the next rotation)."
    Set-OwnerOnlyAcl -Path $keyFile
    exit 0
}

if ($Rotate) {
    $code = Invoke-Node keygen --rotate
}
else {
    $code = Invoke-Node keygen
}
if ($code -ne 0) { exit $code }

Set-OwnerOnlyAcl -Path $keyFile
Write-Host 'copy the key above to the Pi (X-API-Key or Authorization: Bearer); it is not shown again'
exit $code
