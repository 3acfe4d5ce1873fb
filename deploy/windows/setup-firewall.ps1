<#
.SYNOPSIS
    Allow the API port from the Pi and loopback only (Windows Firewall; run as administrator).

.DESCRIPTION
    Reads API_PORT, PI_IP and ALLOWED_IPS with `ibkr-node configure show --json` and keeps one
    inbound allow rule ("ibkr-node API (from the Pi)", id ibkr-node-api, group ibkr-node) for TCP
    API_PORT from 127.0.0.1, PI_IP and ALLOWED_IPS, on every network profile.

    There is deliberately no block rule: in Windows Firewall a block rule wins over every allow
    rule, so it would shut out the Pi too. Other addresses are refused because nothing allows
    them (inbound default: block) and, behind that, by the node's own allow-list (PI_IP,
    ALLOWED_IPS) and API key.

    -AdditionalIPs first adds the addresses to ALLOWED_IPS in .env (`ibkr-node configure
    allow-ips`, which validates each one, keeps a backup and needs no daemon restart), so the
    firewall and the node's allow-list stay the same list.

    Safe to run twice: a rule that already matches is left alone; a rule that differs is
    replaced. The script warns about enabled inbound block rules on the API port.

.PARAMETER AdditionalIPs
    More addresses (or networks such as 192.168.1.0/24) allowed to call the API, comma-separated
    as in the seed ("192.168.1.51,192.168.1.52") or as an array.

.PARAMETER Force
    Remove and re-create the rule even when it already matches.

.EXAMPLE
    .\setup-firewall.ps1
    Creates (or checks) the rule for the Pi and loopback.

.EXAMPLE
    .\setup-firewall.ps1 -AdditionalIPs "192.168.1.51,192.168.1.52"
    Adds two addresses to ALLOWED_IPS in .env and to the rule.

.EXAMPLE
    .\setup-firewall.ps1 -Force
    Re-creates the rule from .env.
#>
[CmdletBinding()]
param(
    [string[]]$AdditionalIPs = @(),
    [switch]$Force
)

Set-StrictMode -Version Latest
$ErrorActionPreference = 'Stop'
. (Join-Path $PSScriptRoot 'common.ps1')

Assert-Administrator

$extra = Split-AddressList $AdditionalIPs
if ($extra.Count -gt 0) {
    $code = Invoke-Node configure allow-ips ($extra -join ',')
    if ($code -ne 0) { exit $code }
}

$config = Get-NodeConfig
$port = [int](Get-ConfigValue $config 'API_PORT')
$piIP = Get-ConfigValue $config 'PI_IP'
$bindHost = Get-ConfigValue $config 'API_BIND_HOST'
if ($port -le 0) {
    throw "configure show did not give API_PORT; check $EnvFile"
}

$addresses = @()
foreach ($address in @('127.0.0.1') + (Split-AddressList $piIP) +
    (Split-AddressList (Get-ConfigValue $config 'ALLOWED_IPS')) + $extra) {
    if ($addresses -notcontains $address) { $addresses += $address }
}
if (-not $piIP) {
    Write-Host "PI_IP is not set in $EnvFile (configure.ps1 -PiIP ...): the rule allows only loopback and ALLOWED_IPS" -ForegroundColor Yellow
}
if ($bindHost -and ([string]$bindHost).StartsWith('127.')) {
    Write-Host "API_BIND_HOST is ${bindHost}: the API listens on loopback only, so the Pi cannot reach it whatever the firewall says (configure.ps1 -LanIP ...)" -ForegroundColor Yellow
}

$existing = Get-NetFirewallRule -Name $FirewallRuleName -ErrorAction SilentlyContinue
if ($null -ne $existing) {
    $ports = @(($existing | Get-NetFirewallPortFilter).LocalPort | ForEach-Object { [string]$_ })
    $remote = @(($existing | Get-NetFirewallAddressFilter).RemoteAddress | ForEach-Object { [string]$_ })
    $same = ([string]$existing.Enabled -eq 'True') -and ([string]$existing.Action -eq 'Allow') -and
        ($ports.Count -eq 1) -and ($ports[0] -eq [string]$port) -and
        ($remote.Count -eq $addresses.Count) -and
        (@(Compare-Object -ReferenceObject $remote -DifferenceObject $addresses).Count -eq 0)
    if ($same -and -not $Force) {
        Write-Host "firewall rule '$FirewallRuleDisplayName' is up to date: TCP $port from $($addresses -join ', ')"
        exit 0
    }
    Write-Host "replacing firewall rule '$FirewallRuleDisplayName' (was TCP $($ports -join ',') from $($remote -join ', '))"
    Remove-NetFirewallRule -Name $FirewallRuleName
}

$null = New-NetFirewallRule -Name $FirewallRuleName -DisplayName $FirewallRuleDisplayName `
    -Group $FirewallRuleGroup `
    -Description "ibkr-node: the API port from the Pi, loopback and ALLOWED_IPS (setup-firewall.ps1; no block rule on purpose)" `
    -Direction Inbound -Action Allow -Protocol TCP -LocalPort $port `
    -RemoteAddress $addresses -Profile Any -Enabled True
Write-Host "firewall rule '$FirewallRuleDisplayName': TCP $port allowed from $($addresses -join ', ')"

# A block rule on the same port would win over this allow rule.
$blocking = @(Get-NetFirewallRule -Direction Inbound -Action Block -Enabled True -ErrorAction SilentlyContinue |
    Where-Object {
        $filter = $_ | Get-NetFirewallPortFilter
        ([string]$filter.Protocol -eq 'TCP') -and
            (@($filter.LocalPort) -contains [string]$port)
    })
foreach ($rule in $blocking) {
    Write-Host "WARNING: the inbound block rule '$($rule.DisplayName)' covers TCP $port and wins over the allow rule; remove or narrow it (Remove-NetFirewallRule -Name '$($rule.Name)')" -ForegroundColor Yellow
}
exit 0
