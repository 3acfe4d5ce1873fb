<#
.SYNOPSIS
    Check the node by hand: `ibkr-node state`, then GET /livez and /health as the Pi would.

.DESCRIPTION
    1. `ibkr-node state`: the daemon's state (exit 0 SERVING, 1 another state, 2 unreachable).
    2. GET /livez on 127.0.0.1:API_PORT (no key; answers in every state while the daemon runs).
    3. GET /health with the X-API-Key header, the key read from API_KEY_FILE (the Pi's check:
       200 "pass" when SERVING, 200 "warn" when DEGRADED, 503 "fail" otherwise).

    HTTPS is used when TLS_CERT_FILE is set; the certificate is not checked on loopback (it
    names the LAN address, and the peer is this machine). Changes nothing.

    Exit code: `ibkr-node state`'s when it is not 0; else 1 when /livez or /health did not
    answer 200; else 0.

.PARAMETER TimeoutSeconds
    The timeout of each HTTP request; default 5.

.EXAMPLE
    .\healthcheck.ps1
#>
[CmdletBinding()]
param(
    [int]$TimeoutSeconds = 5
)

Set-StrictMode -Version Latest
$ErrorActionPreference = 'Stop'
. (Join-Path $PSScriptRoot 'common.ps1')

function Invoke-HealthGet {
    <# GET a URL; returns status (0 when no answer), body and error text. Never throws. #>
    param([string]$Url, [hashtable]$Headers = @{}, [hashtable]$Extra = @{})
    $result = @{ Status = 0; Body = ''; Error = '' }
    try {
        $response = Invoke-WebRequest -Uri $Url -Headers $Headers -UseBasicParsing `
            -TimeoutSec $TimeoutSeconds @Extra
        $result.Status = [int]$response.StatusCode
        $content = $response.Content
        if ($content -is [byte[]]) {
            # Windows PowerShell returns bytes for types it does not know as text (health+json).
            $content = [System.Text.Encoding]::UTF8.GetString($content)
        }
        $result.Body = [string]$content
    }
    catch {
        $exception = $_.Exception
        $property = $exception.PSObject.Properties['Response']
        if ($null -ne $property -and $null -ne $property.Value) {
            $result.Status = [int]$property.Value.StatusCode
        }
        if ($null -ne $_.ErrorDetails) { $result.Body = [string]$_.ErrorDetails.Message }
        $result.Error = $exception.Message
    }
    return $result
}

function Get-BodyField {
    param([string]$Body, [string]$Name)
    try {
        $document = $Body | ConvertFrom-Json
        $property = $document.PSObject.Properties[$Name]
        if ($null -ne $property) { return [string]$property.Value }
    }
    catch {
        return ''
    }
    return ''
}

function Enable-LoopbackTls {
    <# Accept the node's certificate on loopback (it names the LAN address; the peer is us). #>
    if ($PSVersionTable.PSVersion.Major -ge 6) {
        $extra['SkipCertificateCheck'] = $true
    }
    else {
        [System.Net.ServicePointManager]::SecurityProtocol =
            [System.Net.ServicePointManager]::SecurityProtocol -bor [System.Net.SecurityProtocolType]::Tls12
        [System.Net.ServicePointManager]::ServerCertificateValidationCallback = { $true }
    }
}

$code = Invoke-Node state
Write-Host ''

$config = Get-NodeConfig
$port = [int](Get-ConfigValue $config 'API_PORT')
$extra = @{}

$scheme = 'http'
if (Get-ConfigValue $config 'TLS_CERT_FILE') {
    $scheme = 'https'
    Enable-LoopbackTls
}
$base = "${scheme}://127.0.0.1:$port"
$httpFailed = $false

$livez = Invoke-HealthGet -Url "$base/livez" -Extra $extra
if ($livez.Status -eq 0 -and $scheme -eq 'http' -and $code -ne $StateUnreachable) {
    # The daemon answers `state` but not plain HTTP: it serves TLS (TLS_CERT_FILE).
    Enable-LoopbackTls
    $base = "https://127.0.0.1:$port"
    $livez = Invoke-HealthGet -Url "$base/livez" -Extra $extra
}
if ($livez.Status -eq 200) {
    Write-Check PASS 'livez' "$base/livez: 200, state $(Get-BodyField $livez.Body 'state')"
}
else {
    $httpFailed = $true
    Write-Check FAIL 'livez' "$base/livez: $($livez.Status) $($livez.Error) -> is the daemon running? (status.ps1, start-api.ps1)"
}

$keyFile = Resolve-NodePath ([string](Get-ConfigValue $config 'API_KEY_FILE'))
$key = $null
if ($keyFile -and (Test-Path -LiteralPath $keyFile -PathType Leaf)) {
    $key = @(Get-Content -LiteralPath $keyFile | Where-Object { $_.Trim() } | Select-Object -First 1)
}
if ($null -eq $key -or $key.Count -eq 0) {
    Write-Check WARN 'health' "no key in $keyFile, /health not checked -> generate-api-key.ps1 (a key set as API_KEY in .env is not read here)"
}
else {
    $health = Invoke-HealthGet -Url "$base/health" -Headers @{ 'X-API-Key' = $key[0].Trim() } -Extra $extra
    $detail = "$base/health: $($health.Status) $(Get-BodyField $health.Body 'status'): $(Get-BodyField $health.Body 'description')"
    if ($health.Status -eq 200) {
        Write-Check PASS 'health' $detail
    }
    elseif ($health.Status -eq 401) {
        $httpFailed = $true
        Write-Check FAIL 'health' "$base/health: 401, the key in $keyFile was refused -> check API_KEY / API_KEY_FILE"
    }
    else {
        $httpFailed = $true
        Write-Check FAIL 'health' "$detail $($health.Error)"
    }
}

if ($code -ne 0) { exit $code }
if ($httpFailed) { exit 1 }
exit 0
