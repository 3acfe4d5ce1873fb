"""deploy/windows/*.ps1: they parse, keep the house rules, and call only the CLI that exists.

The scripts cannot run here (Linux), so they are parsed with tree-sitter-powershell: every
`Invoke-Node ...` (and any literal `ibkr-node ...`) is read word by word and checked against the
real argparse parser of ``node.cli.build_parser()``. What only Windows can show is the manual
checklist of deploy/windows/README.md.
"""

from __future__ import annotations

import argparse
import re
import shlex
from collections.abc import Iterator
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path

import pytest
import tree_sitter
import tree_sitter_powershell

from node.cli import build_parser

SCRIPTS_DIR = Path(__file__).resolve().parents[2] / "deploy" / "windows"

# The scripts the seed's deployment guide names; operators' commands keep working.
SEED_SCRIPTS = [
    "configure.ps1",
    "setup-ibkr-autologin.ps1",
    "setup-firewall.ps1",
    "setup-tasks.ps1",
    "generate-api-key.ps1",
    "verify.ps1",
    "start-gateway.ps1",
    "stop-gateway.ps1",
    "start-api.ps1",
    "stop-api.ps1",
    "watchdog.ps1",
    "healthcheck.ps1",
    "status.ps1",
]
ALL_SCRIPTS = ["common.ps1", *SEED_SCRIPTS]

# Commands whose arguments are ibkr-node's (common.ps1's wrappers and the program itself).
NODE_COMMANDS = {"invoke-node", "invoke-nodecapture", "ibkr-node", "ibkr-node.exe"}
# common.ps1 helpers and the CLI command each one runs.
HELPER_CALLS = {
    "get-nodeconfig": ("configure", "show"),
    "test-noderunning": ("state",),
    "start-nodetask": ("state",),
}

# The seed's parameters (and the contract's) that must keep working.
REQUIRED_PARAMETERS = {
    "start-gateway.ps1": {"Force"},
    "start-api.ps1": {"Force"},
    "setup-tasks.ps1": {"Force"},
    "setup-firewall.ps1": {"Force", "AdditionalIPs"},
    "generate-api-key.ps1": {"Rotate"},
    "configure.ps1": {
        "NonInteractive", "Force", "PiIP", "SyncFolder", "Launcher", "GatewayPath", "IbcPath",
        "TradingMode",
    },
}  # fmt: skip

# The CLI commands each script must call (directly or through a common.ps1 helper).
EXPECTED_CALLS = {
    "configure.ps1": {("configure",)},
    "setup-ibkr-autologin.ps1": {("configure", "ibc"), ("configure", "show")},
    "setup-firewall.ps1": {("configure", "allow-ips"), ("configure", "show")},
    "generate-api-key.ps1": {("keygen",)},
    "verify.ps1": {("verify",)},
    "start-gateway.ps1": {("state",), ("ctl", "start")},
    "stop-gateway.ps1": {("ctl", "stop")},
    "start-api.ps1": {("state",)},
    "stop-api.ps1": {("ctl", "shutdown")},
    "watchdog.ps1": {("state",)},
    "healthcheck.ps1": {("state",)},
    "status.ps1": {("state",)},
}

ADMIN_SCRIPTS = ["setup-firewall.ps1", "setup-tasks.ps1"]

SEED_TASKS = [
    "IBKR-Gateway-START",
    "IBKR-API-START",
    "IBKR-API-STOP",
    "IBKR-Gateway-STOP",
    "IBKR-Watchdog",
    "IBKR-Boot-Reconcile",
]

LANGUAGE = tree_sitter.Language(tree_sitter_powershell.language())

# Syntax Windows PowerShell 5.1 does not have (7.x only): leaf token types.
PS7_ONLY_TOKENS = {"&&", "||", "??", "??=", "?.", "?["}


# --- parsing ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Word:
    """One argument of a command: a literal word, a value known only at run time, or a splat."""

    kind: str  # "literal" | "value" | "splat"
    text: str


@dataclass
class Call:
    name: str
    line: int
    words: list[Word]
    path: tuple[str, ...] = ()
    problems: list[str] = field(default_factory=list)


@dataclass
class Script:
    name: str
    source: bytes
    tree: tree_sitter.Tree

    @property
    def text(self) -> str:
        return self.source.decode("utf-8")


def parse(name: str, source: bytes) -> Script:
    return Script(name, source, tree_sitter.Parser(LANGUAGE).parse(source))


@cache
def load(name: str) -> Script:
    return parse(name, (SCRIPTS_DIR / name).read_bytes())


def walk(node: tree_sitter.Node) -> Iterator[tree_sitter.Node]:
    yield node
    for child in node.children:
        yield from walk(child)


def text(node: tree_sitter.Node) -> str:
    return (node.text or b"").decode("utf-8")


def first_syntax_error(script: Script) -> tree_sitter.Node | None:
    for node in walk(script.tree.root_node):
        if node.type == "ERROR" or node.is_missing:
            return node
    return None


def unquote(value: str) -> str:
    if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
        return value[1:-1]
    return value


def is_runtime_value(node: tree_sitter.Node) -> bool:
    runtime = {"variable", "sub_expression", "parenthesized_expression", "array_expression",
               "script_block_expression", "member_access", "invokation_expression"}  # fmt: skip
    return any(n.type in runtime for n in walk(node))


def command_name(command: tree_sitter.Node) -> str | None:
    for child in command.children:
        if child.type == "command_name":
            return text(child)
        if child.type == "command_name_expr":
            return re.split(r"[\\/]", unquote(text(child)))[-1]
    return None


def command_words(command: tree_sitter.Node) -> list[Word]:
    words: list[Word] = []
    for elements in command.children:
        if elements.type != "command_elements":
            continue
        for element in elements.children:
            if element.type == "command_argument_sep":
                continue
            value = text(element).strip()
            if re.fullmatch(r"@\w+", value):
                words.append(Word("splat", value[1:]))
            elif is_runtime_value(element):
                words.append(Word("value", value))
            else:
                words.append(Word("literal", unquote(value)))
    return words


def commands(script: Script) -> Iterator[tuple[str, int, list[Word]]]:
    for node in walk(script.tree.root_node):
        if node.type == "command":
            name = command_name(node)
            if name is not None:
                yield name, node.start_point.row + 1, command_words(node)


def splat_options(script: Script, variable: str) -> list[str]:
    """The `--options` written into a splatted variable (`$cliArgs += '--force'`)."""
    options: list[str] = []
    for node in walk(script.tree.root_node):
        if node.type != "assignment_expression" or not node.children:
            continue
        if text(node.children[0]).strip().lower() != f"${variable}".lower():
            continue
        for literal in walk(node):
            if literal.type == "string_literal" and not is_runtime_value(literal):
                value = unquote(text(literal))
                if value.startswith("--"):
                    options.append(value)
    return options


def script_parameters(script: Script) -> list[str]:
    for child in script.tree.root_node.children:
        if child.type == "param_block":
            return [
                text(v).lstrip("$")
                for p in walk(child)
                if p.type == "script_parameter"
                for v in p.children
                if v.type == "variable"
            ]
    return []


def param_block(script: Script) -> tree_sitter.Node | None:
    for child in script.tree.root_node.children:
        if child.type == "param_block":
            return child
    return None


def help_comment(script: Script) -> str:
    """The comment-based help: a <# #> block that opens the file (else Get-Help ignores it)."""
    children = script.tree.root_node.children
    if children and children[0].type == "comment" and text(children[0]).startswith("<#"):
        return text(children[0])
    return ""


# --- checking CLI calls against argparse ------------------------------------------------------


def subcommands(parser: argparse.ArgumentParser) -> argparse._SubParsersAction | None:  # type: ignore[type-arg]
    group = parser._subparsers
    if group is None:
        return None
    for action in group._group_actions:
        if isinstance(action, argparse._SubParsersAction):
            return action
    return None


def positional_slots(parser: argparse.ArgumentParser) -> int:
    slots = 0
    for action in parser._actions:
        if action.option_strings or isinstance(action, argparse._SubParsersAction):
            continue
        if action.nargs in (None, "?"):
            slots += 1
        elif isinstance(action.nargs, int):
            slots += action.nargs
        else:  # "*", "+", REMAINDER
            slots += 1_000
    return slots


def check_call(call: Call, splats: dict[str, list[str]], root: argparse.ArgumentParser) -> Call:
    """Walk the words down the parser: the command path must exist, every --option on it."""
    parser, path = root, ["ibkr-node"]
    slots = positional_slots(parser)
    words = call.words
    lost = False  # after an unknown command, the rest cannot be placed
    i = 0
    while i < len(words):
        word = words[i]
        i += 1
        where = " ".join(path)
        if word.kind == "splat":
            for option in splats.get(word.text, []):
                if option not in parser._option_string_actions:
                    call.problems.append(f"`{where}` has no option {option} (from @{word.text})")
            continue
        if word.kind == "literal" and word.text.startswith("-"):
            action = parser._option_string_actions.get(word.text)
            if action is None:
                call.problems.append(f"`{where}` has no option {word.text}")
            elif action.nargs != 0 and i < len(words):
                i += 1  # the option's value
            continue
        sub = subcommands(parser)
        if word.kind == "literal" and sub is not None and word.text in sub.choices:
            parser = sub.choices[word.text]
            path.append(word.text)
            slots = positional_slots(parser)
            continue
        if slots > 0:
            slots -= 1
            continue
        if sub is not None and word.kind == "value":
            call.problems.append(f"`{where}`: write the command as a literal word, not {word.text}")
            lost = True
        elif sub is not None:
            call.problems.append(
                f"`{where}` has no command {word.text!r} (it has: {', '.join(sub.choices)})"
            )
            lost = True
        else:
            call.problems.append(f"`{where}` takes no argument {word.text!r}")
    sub = subcommands(parser)
    if sub is not None and sub.required and not lost:
        call.problems.append(f"`{' '.join(path)}` needs a command: {', '.join(sub.choices)}")
    call.path = tuple(path[1:])
    return call


def node_calls(script: Script) -> list[Call]:
    root = build_parser()
    calls = []
    for name, line, words in commands(script):
        if name.lower() in NODE_COMMANDS:
            splats = {w.text: splat_options(script, w.text) for w in words if w.kind == "splat"}
            calls.append(check_call(Call(name, line, words), splats, root))
    return calls


def problems_in(script: Script) -> list[str]:
    return [f"{script.name}:{c.line}: {p}" for c in node_calls(script) for p in c.problems]


# --- the tests --------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ALL_SCRIPTS)
def test_script_exists(name: str) -> None:
    assert (SCRIPTS_DIR / name).is_file(), f"deploy/windows/{name} is missing"


def test_no_other_scripts() -> None:
    """A new .ps1 must be added to the lists above (and so to the checks)."""
    assert sorted(p.name for p in SCRIPTS_DIR.glob("*.ps1")) == sorted(ALL_SCRIPTS)


@pytest.mark.parametrize("name", ALL_SCRIPTS)
def test_ascii_only(name: str) -> None:
    """Windows PowerShell 5.1 reads a file without a BOM as the ANSI code page."""
    source = (SCRIPTS_DIR / name).read_bytes()
    bad = [i for i, byte in enumerate(source) if byte > 0x7F]
    line = source.count(b"\n", 0, bad[0]) + 1 if bad else 0
    assert not bad, f"{name}:{line}: a non-ASCII character"


@pytest.mark.parametrize("name", ALL_SCRIPTS)
def test_parses_without_errors(name: str) -> None:
    script = load(name)
    bad = first_syntax_error(script)
    assert bad is None, (
        f"{name}:{bad.start_point.row + 1}:{bad.start_point.column + 1}: "
        f"{'missing ' + bad.type if bad.is_missing else 'syntax error'} near {text(bad)[:60]!r}"
    )
    assert not script.tree.root_node.has_error


def ps7_only(script: Script) -> list[str]:
    return [
        f"line {n.start_point.row + 1}: {n.type}"
        for n in walk(script.tree.root_node)
        if n.child_count == 0 and n.type in PS7_ONLY_TOKENS
    ]


@pytest.mark.parametrize("name", ALL_SCRIPTS)
def test_windows_powershell_51_syntax(name: str) -> None:
    found = ps7_only(load(name))
    assert not found, f"{name} uses PowerShell 7-only syntax: {found}"


def test_syntax_checks_can_fail() -> None:
    """A broken script and PowerShell 7 syntax are caught (?? and ?: do not even parse)."""
    broken = parse("fake.ps1", b"if ($x {\n    Invoke-Node state\n")
    assert first_syntax_error(broken) is not None
    assert ps7_only(parse("fake.ps1", b"Invoke-Node state && Invoke-Node ctl stop\n")) == [
        "line 1: &&"
    ]
    for source in (b"$a = $b ?? 1\n", b"$a = $b ? 1 : 2\n"):
        assert first_syntax_error(parse("fake.ps1", source)) is not None


@pytest.mark.parametrize("name", ALL_SCRIPTS)
def test_house_rules(name: str) -> None:
    script = load(name)
    source = script.text
    assert re.search(r"^Set-StrictMode -Version Latest$", source, re.M), "no Set-StrictMode"
    assert re.search(r"^\$ErrorActionPreference = 'Stop'$", source, re.M), "no EAP Stop"
    help_text = help_comment(script)
    for keyword in (".SYNOPSIS", ".DESCRIPTION", ".EXAMPLE"):
        assert keyword in help_text, f"{name}: comment-based help lacks {keyword}"
    if name == "common.ps1":
        return
    assert re.search(r"^\. \(Join-Path \$PSScriptRoot 'common\.ps1'\)$", source, re.M), (
        f"{name} does not dot-source common.ps1"
    )
    block = param_block(script)
    assert block is not None, f"{name} has no param() block"
    assert "[CmdletBinding()]" in text(block), f"{name}: param() without [CmdletBinding()]"
    for parameter in script_parameters(script):
        assert re.search(rf"^\.PARAMETER {parameter}$", help_text, re.M), (
            f"{name}: no .PARAMETER {parameter} in the help"
        )


@pytest.mark.parametrize(("name", "required"), sorted(REQUIRED_PARAMETERS.items()))
def test_seed_parameters(name: str, required: set[str]) -> None:
    have = {p.lower() for p in script_parameters(load(name))}
    missing = {p for p in required if p.lower() not in have}
    assert not missing, f"{name} lacks the parameters {sorted(missing)}"


@pytest.mark.parametrize("name", ADMIN_SCRIPTS)
def test_administrator_check(name: str) -> None:
    called = [n.lower() for n, _, _ in commands(load(name))]
    assert "assert-administrator" in called, f"{name} does not call Assert-Administrator"


def test_administrator_check_uses_windows_principal() -> None:
    source = load("common.ps1").text
    body = source[source.index("function Test-Administrator") :]
    assert "WindowsPrincipal" in body
    assert "WindowsBuiltInRole]::Administrator" in body


@pytest.mark.parametrize("name", ALL_SCRIPTS)
def test_cli_calls_exist(name: str) -> None:
    problems = problems_in(load(name))
    assert not problems, "calls to options or commands ibkr-node does not have:\n" + "\n".join(
        problems
    )


@pytest.mark.parametrize(("name", "expected"), sorted(EXPECTED_CALLS.items()))
def test_scripts_call_their_commands(name: str, expected: set[tuple[str, ...]]) -> None:
    script = load(name)
    called = {c.path for c in node_calls(script)}
    called |= {HELPER_CALLS[n.lower()] for n, _, _ in commands(script) if n.lower() in HELPER_CALLS}
    assert expected <= called, f"{name} calls {sorted(called)}, expected {sorted(expected)}"


def test_helpers_call_what_they_say() -> None:
    """HELPER_CALLS above is what common.ps1's helpers really run."""
    common = load("common.ps1")
    source = common.text
    calls = node_calls(common)
    for helper, path in HELPER_CALLS.items():
        if helper == "start-nodetask":
            continue  # it waits through Test-NodeRunning
        start = source.lower().index(f"function {helper}")
        end = source.find("\nfunction ", start + 1)
        lines = range(source.count("\n", 0, start) + 1, source.count("\n", 0, end) + 2)
        assert any(c.path == path and c.line in lines for c in calls), (helper, path)
    start_task = source[source.index("function Start-NodeTask") :]
    assert "Test-NodeRunning" in start_task


def test_checker_reports_a_bad_command_and_a_bad_option() -> None:
    """The checker can fail: an unknown command and an unknown option are both reported."""
    problems = problems_in(parse("fake.ps1", b"$code = Invoke-Node ctl launch --nope\n"))
    assert len(problems) == 2, problems
    assert "launch" in problems[0]
    assert "--nope" in problems[1]


def test_checker_reports_splatted_options_and_missing_commands() -> None:
    source = b"""
$cliArgs = @()
if ($x) { $cliArgs += @('--no-such-flag', $x) }
Invoke-Node keygen @cliArgs
Invoke-Node ctl
& ibkr-node --env-file $EnvFile stat
"""
    problems = problems_in(parse("fake.ps1", source))
    assert any("--no-such-flag" in p and "keygen" in p for p in problems), problems
    assert any("`ibkr-node ctl` needs a command" in p for p in problems), problems
    assert any("'stat'" in p for p in problems), problems
    assert len(problems) == 3, problems


def test_checker_accepts_good_calls() -> None:
    source = b"""
$code = Invoke-Node ctl start --force
Invoke-Node audit export --format csv
& ibkr-node.exe --env-file $EnvFile state --json
$args = @('--rotate'); Invoke-Node keygen @args
"""
    script = parse("fake.ps1", source)
    assert problems_in(script) == []
    assert [c.path for c in node_calls(script)] == [
        ("ctl", "start"),
        ("audit", "export"),
        ("state",),
        ("keygen",),
    ]


# --- what the scheduled task and the firewall rule are made of --------------------------------


def arguments_of(script: Script, command: str) -> list[list[Word]]:
    return [words for name, _, words in commands(script) if name.lower() == command.lower()]


def flags(words: list[Word]) -> dict[str, str | None]:
    result: dict[str, str | None] = {}
    for i, word in enumerate(words):
        if word.kind == "literal" and word.text.startswith("-"):
            following = words[i + 1] if i + 1 < len(words) else None
            has_value = following is not None and not following.text.startswith("-")
            result[word.text.lower()] = following.text if has_value and following else None
    return result


def test_task_runs_the_daemon_with_env_file_before_run() -> None:
    """--env-file is a global option: `ibkr-node --env-file <repo>\\.env run`."""
    script = load("setup-tasks.ps1")
    templates = [
        unquote(text(n))
        for n in walk(script.tree.root_node)
        if n.type == "string_literal" and "--env-file" in text(n)
    ]
    assert templates, "setup-tasks.ps1 builds no task arguments with --env-file"
    root = build_parser()
    for template in templates:
        words = shlex.split(template.replace("{0}", "ENV").replace("{1}", "ENV"))
        if words[0] == "run" and "--project" in words:  # uv run --project <repo> ibkr-node ...
            words = words[words.index("ibkr-node") + 1 :]
        assert words[-1] == "run", template
        assert words.index("--env-file") < words.index("run"), template
        call = check_call(Call("task", 0, [Word("literal", w) for w in words]), {}, root)
        assert call.problems == [], (template, call.problems)
        assert call.path == ("run",), template


def test_task_definition() -> None:
    script = load("setup-tasks.ps1")
    [settings] = arguments_of(script, "New-ScheduledTaskSettingsSet")
    s = flags(settings)
    assert s["-multipleinstances"] == "IgnoreNew"
    assert "Zero" in (s.get("-executiontimelimit") or "")
    for flag in ("-restartcount", "-restartinterval", "-allowstartifonbatteries",
                 "-dontstopifgoingonbatteries"):  # fmt: skip
        assert flag in s, flag
    [principal] = arguments_of(script, "New-ScheduledTaskPrincipal")
    assert flags(principal)["-logontype"] == "Interactive"
    [trigger] = arguments_of(script, "New-ScheduledTaskTrigger")
    assert "-atlogon" in flags(trigger)
    [register] = arguments_of(script, "Register-ScheduledTask")
    r = flags(register)
    assert r["-taskname"] == "$NodeTaskName"
    assert "-force" in r
    action = flags(arguments_of(script, "New-ScheduledTaskAction")[0])
    assert action["-workingdirectory"] == "$RepoRoot"
    assert arguments_of(script, "Unregister-ScheduledTask"), "the seed's tasks are not removed"
    common = load("common.ps1").text
    assert re.search(r"^\$NodeTaskName = 'ibkr-node'$", common, re.M)
    for task in SEED_TASKS:
        assert f"'{task}'" in common, task


def test_firewall_rule_allows_and_never_blocks() -> None:
    script = load("setup-firewall.ps1")
    rules = arguments_of(script, "New-NetFirewallRule")
    assert len(rules) == 1
    rule = flags(rules[0])
    assert rule["-direction"] == "Inbound"
    assert rule["-action"] == "Allow"
    assert rule["-protocol"] == "TCP"
    assert rule["-localport"] == "$port"
    assert rule["-remoteaddress"] == "$addresses"
    for name in ALL_SCRIPTS:
        for words in arguments_of(load(name), "New-NetFirewallRule"):
            assert flags(words).get("-action") != "Block", name


def test_acl_restriction() -> None:
    common = load("common.ps1").text
    body = common[common.index("function Set-OwnerOnlyAcl") :]
    assert "/inheritance:r" in body
    assert "/grant:r" in body
    for name in ("setup-ibkr-autologin.ps1", "generate-api-key.ps1"):
        called = [n.lower() for n, _, _ in commands(load(name))]
        assert "set-owneronlyacl" in called, name
