"""ferry(1) documents exactly the subcommands the binary has, with their options.

The subcommand table (src/main.c) is the source: `ferry --help` prints it. Each
command needs a `.SS "ferry NAME"` section in doc/ferry.1 with a `.TP` entry for
every option of its usage line; a section for a command the binary lacks is stale.
"""
import os
import re
import subprocess

from conftest import FERRY_BIN, ROOT

MAN1 = os.path.join(ROOT, "doc", "ferry.1")


def help_commands():
    out = subprocess.run([FERRY_BIN, "--help"], capture_output=True, text=True, check=True)
    assert out.stdout.startswith("usage: ferry COMMAND"), out.stdout
    commands = {}
    for line in out.stdout.splitlines():
        m = re.match(r"^  ([a-z][a-z-]*)\s+(.*)$", line)
        if m:
            opts = re.findall(r"(?:^|[\s\[|])(--?[a-z][a-z-]*)", m.group(2))
            commands[m.group(1)] = opts
    return commands


def man_sections():
    with open(MAN1) as f:
        text = f.read()
    plain = text.replace("\\-", "-")
    sections = {}
    for m in re.finditer(r'^\.SS "ferry ([a-z-]+)"\n(.*?)(?=^\.S[SH] )', plain, re.S | re.M):
        sections[m.group(1)] = m.group(2)
    return sections


def test_every_command_is_documented_with_its_options():
    commands = help_commands()
    assert {"serve", "check", "version"} <= set(commands), commands
    sections = man_sections()
    problems = []
    for name, opts in commands.items():
        if name not in sections:
            problems.append(f'ferry {name}: no .SS "ferry {name}" section in doc/ferry.1')
            continue
        # Options are described in tagged paragraphs: the line after ".TP".
        tags = "\n".join(re.findall(r"^\.TP\n(.*)$", sections[name], re.M))
        for opt in opts:
            if not re.search(r"(?<![\w-])" + re.escape(opt) + r"(?![\w-])", tags):
                problems.append(f"ferry {name}: option {opt} has no .TP entry in doc/ferry.1")
    for name in sections:
        if name not in commands:
            problems.append(f"doc/ferry.1 documents 'ferry {name}', which the binary lacks")
    assert not problems, "\n".join(problems)


def test_synopsis_lists_every_command():
    with open(MAN1) as f:
        text = f.read()
    synopsis = text.split(".SH SYNOPSIS", 1)[1].split(".SH ", 1)[0]
    for name in help_commands():
        assert f".B ferry {name}\n" in synopsis, f"ferry {name} missing from the SYNOPSIS"
