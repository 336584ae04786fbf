"""Run real ansible-playbook against this checkout installed as a collection in a temporary path."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from .tools import ROOT

BIN = os.path.dirname(sys.executable)


# The head of a play on the test's store: a playbook template is PLAY + its tasks, formatted with
# ``store=`` (and the tasks' own fields; braces of the tasks' YAML doubled).
PLAY = """
- hosts: localhost
  gather_facts: false
  module_defaults:
    group/opencapf.capf.capf:
      store: "{store}"
  tasks:
"""


def install_collection(base: str) -> str:
    """Copy the checkout to ``base/ansible_collections/opencapf/capf``; return the collections path."""
    subprocess.run([os.path.join(ROOT, "scripts", "collection-copy"), base], check=True, capture_output=True,
                   timeout=120)
    return base


def playbook(collections_path: str, path: str, *args: str, env: dict | None = None, check: bool = True,
             timeout: int = 600) -> subprocess.CompletedProcess:
    """Run a playbook with the JSON callback; returns the process with ``.json`` parsed."""
    environment = dict(os.environ)
    environment.update({
        "ANSIBLE_COLLECTIONS_PATH": collections_path,
        "ANSIBLE_STDOUT_CALLBACK": "json_record",
        "ANSIBLE_CALLBACK_PLUGINS": os.path.join(os.path.dirname(os.path.abspath(__file__)), "callback_plugins"),
        "ANSIBLE_LOCALHOST_WARNING": "false",
        "ANSIBLE_INVENTORY_UNPARSED_WARNING": "false",
        "ANSIBLE_PYTHON_INTERPRETER": sys.executable,
        "ANSIBLE_NOCOLOR": "1",
        "PATH": BIN + os.pathsep + environment.get("PATH", ""),
    })
    environment.update(env or {})
    result = subprocess.run([os.path.join(BIN, "ansible-playbook"), "-i", "localhost,", "-c", "local", path, *args],
                            capture_output=True, text=True, env=environment, timeout=timeout, check=False)
    try:
        result.json = json.loads(result.stdout[result.stdout.index("{"):])
    except ValueError:
        result.json = None
    if check and result.returncode != 0:
        raise AssertionError(f"ansible-playbook {path} failed ({result.returncode}):\n{result.stdout[-6000:]}\n"
                             f"{result.stderr[-3000:]}")
    return result


def task_results(run, name: str) -> list[dict]:
    """Every host result of the tasks called ``name``."""
    found = []
    for play in run.json["plays"]:
        for task in play["tasks"]:
            if task["task"]["name"] == name:
                found.extend(task["hosts"].values())
    return found


def changed_tasks(run) -> list[str]:
    return [task["task"]["name"] for play in run.json["plays"] for task in play["tasks"]
            if any(host.get("changed") for host in task["hosts"].values())]
