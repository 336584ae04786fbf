"""Numeric and address options of the command line are checked from the one limit table
(``vocabulary.LIMITS``) before anything starts.

The invariant, over every option of every subcommand: a numeric option takes its type from the
table (no bare ``int``/``float``); the value one step below its minimum and one above its maximum
are refused with exit status 2 and one line naming the option and the rule, never a traceback;
the bounds themselves are accepted. The property runs in-process through the CLI's own ``main``;
the values the issue named, and one per subcommand, run through a real CLI process.
"""

from __future__ import annotations

import argparse

import pytest

from support.serving import Serving
from support.tools import run_cli
from _opencapf import vocabulary
from _opencapf.cli import main as cli_main
from _opencapf.cli import options

DEVICE = "SEP000000000001"


def _subparsers(parser, path=()):
    """Every (command path, parser) below ``parser``, the leaves being the runnable commands."""
    for action in parser._actions:  # pylint: disable=protected-access
        if isinstance(action, argparse._SubParsersAction):  # pylint: disable=protected-access
            for name, child in action.choices.items():
                yield (*path, name), child
                yield from _subparsers(child, (*path, name))


def _options():
    """(command path, action) for every option whose type comes from the limit table or is an address."""
    found = []
    for path, parser in _subparsers(cli_main.build_parser()):
        for action in parser._actions:  # pylint: disable=protected-access
            if getattr(action.type, "limit", None) or action.type is options.address:
                found.append((path, action))
    return found


def _argv(path, action, value: str) -> list[str]:
    """The shortest command line of ``path`` that sets ``action`` to ``value`` and is otherwise valid."""
    dest = action.dest
    bases = {
        ("serve",): [],
        ("issue",): [DEVICE, "phone.pub"],
        ("jobs", "list"): [],
        ("jobs", "cancel"): [],
        ("phones", "show"): [DEVICE],
        ("phone", "enrol"): [DEVICE] + ([] if dest == "server" else ["--server", "127.0.0.1"]),
        ("phone", "fleet"): (([] if dest == "count" else ["--count", "1"])
                             + ([] if dest == "server" else ["--server", "127.0.0.1"])),
    }
    assert path in bases, f"{' '.join(path)} has a checked option: add its command line here"
    setting = [value] if not action.option_strings else [action.option_strings[0], value]
    return [*path, *bases[path], *setting]


def _text(number) -> str:
    return str(int(number)) if float(number).is_integer() else repr(float(number))


def _outside(name: str) -> list[str]:
    limit = vocabulary.LIMITS[name]
    low, high = limit.bounds
    step = 1 if limit.whole else 0.01
    return [_text(low - step), _text(high + step)]


CHECKED = _options()
IDS = [f"{' '.join(path)} {action.option_strings[0] if action.option_strings else action.dest}"
       for path, action in CHECKED]


def test_every_numeric_option_takes_its_range_from_the_limit_table():
    for path, parser in _subparsers(cli_main.build_parser()):
        for action in parser._actions:  # pylint: disable=protected-access
            bare = action.type in (int, float) and not action.choices
            assert not bare, f"{' '.join(path)} {action.option_strings}: a number without a range"
    named = {getattr(action.type, "limit", None) for _path, action in CHECKED}
    expected = {"listen_port", "port", "step_timeout", "queue_timeout", "processes", "store_threads",
                "handshake_timeout", "max_handshakes", "max_connections", "enrolment_interval", "read_timeout",
                "retries", "retry_interval", "phones", "job_list_limit", "row_id", "validity_days"}
    assert expected <= named
    assert {" ".join(path) for path, action in CHECKED if action.type is options.address} == {
        "serve", "phone enrol", "phone fleet"}


def _refused(capsys, argv) -> str:
    with pytest.raises(SystemExit) as stopped:
        cli_main.main(argv)
    assert stopped.value.code == 2, argv
    captured = capsys.readouterr()
    assert "Traceback" not in captured.err and captured.out == ""
    return captured.err.strip().splitlines()[-1]


@pytest.mark.parametrize("path,action", CHECKED, ids=IDS)
def test_values_outside_the_range_are_refused_and_the_bounds_accepted(capsys, path, action):
    argument = "/".join(action.option_strings) or action.metavar
    if action.type is options.address:
        for bad in ("999.1.1.1", "localhost", "", "1.2.3.4/24"):
            line = _refused(capsys, _argv(path, action, bad))
            assert f"argument {argument}: must be an IPv4 or IPv6 address, got {bad!r}" in line, line
        for good in ("127.0.0.1", "::1", "fe80::1%lo"):
            parsed = cli_main.build_parser().parse_args(_argv(path, action, good))
            assert good in str(getattr(parsed, action.dest))
        return
    name = action.type.limit
    limit = vocabulary.LIMITS[name]
    low, high = limit.bounds
    for value in [*_outside(name), "abc", "nan", "inf", "1e999"]:
        line = _refused(capsys, _argv(path, action, value))
        assert line.startswith(f"opencapf {' '.join(path)}: error: argument {argument}: must be "), line
        assert f"{low}" in line and f"{high}" in line and limit.unit in line and repr(value) in line, line
    for value in (low, high):
        parsed = cli_main.build_parser().parse_args(_argv(path, action, _text(value)))
        assert getattr(parsed, action.dest) == value


@pytest.mark.parametrize("argv,expected", [
    (["serve", "--port", "70000"], "argument --port: must be 0\u201365535, got '70000'"),
    (["serve", "--port", "-1"], "argument --port: must be 0\u201365535, got '-1'"),
    (["serve", "--listen", "999.1.1.1"], "argument --listen: must be an IPv4 or IPv6 address, got '999.1.1.1'"),
    (["serve", "--handshake-timeout", "0"], "argument --handshake-timeout: must be 0.5\u2013300 seconds, got '0'"),
    (["serve", "--step-timeout", "-5"], "argument --step-timeout: must be 0.5\u20133600 seconds, got '-5'"),
    (["serve", "--max-handshakes", "0"], "argument --max-handshakes: must be 1\u2013100000, got '0'"),
    (["serve", "--max-connections", "0"], "argument --max-connections: must be 1\u2013100000, got '0'"),
    (["phone", "enrol", DEVICE, "--server", "127.0.0.1", "--port", "0"], "argument --port: must be 1\u201365535"),
    (["phone", "fleet", "--count", "1", "--server", "capf.example"], "argument --server: must be an IPv4"),
    (["phone", "fleet", "--count", "1", "--server", "127.0.0.1", "--concurrency", "0"],
     "argument --concurrency: must be 1\u2013100000, got '0'"),
    (["jobs", "list", "--limit", "0"], "argument --limit: must be 1\u2013100000, got '0'"),
    (["issue", DEVICE, "phone.pub", "--validity-days", "1826"], "argument --validity-days: must be 1\u20131825 days"),
])
def test_the_real_command_refuses_with_one_line_and_status_2(tmp_path, argv, expected):
    store = str(tmp_path / "capf.db")
    result = run_cli("--store", store, *argv)
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr and result.stdout == ""
    assert expected in result.stderr.strip().splitlines()[-1], result.stderr
    assert list(tmp_path.iterdir()) == []  # refused before the store was looked at


def test_serve_starts_with_every_option_at_a_bound(ca_store, tmp_path):
    """The bounds are usable: serve starts with each option at its minimum (the port at 0, any free
    port) and stops cleanly on SIGTERM."""
    argv = []
    for name, option in (("step_timeout", "--step-timeout"), ("handshake_timeout", "--handshake-timeout"),
                         ("queue_timeout", "--queue-timeout"), ("max_handshakes", "--max-handshakes"),
                         ("max_connections", "--max-connections"), ("store_threads", "--store-threads"),
                         ("enrolment_interval", "--enrolment-interval")):
        argv += [option, _text(vocabulary.LIMITS[name].bounds[0])]
    serving = Serving.on(ca_store, tmp_path / "serve.log").start(*argv)
    assert serving.stop() == 0 and "Traceback" not in serving.log()
