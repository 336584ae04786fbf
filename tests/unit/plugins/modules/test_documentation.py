"""The documentation says what the code does: ``docs/`` and ``ansible-doc`` in step with the modules
and the engine's tables, read from the code and from a real ``ansible-doc`` run, so that a module,
an option or a service parameter added later is held to the same rules.

* ``docs/modules.md``, ``README.md`` and ``meta/runtime.yml`` name exactly the modules in
  ``plugins/modules/`` (the ones ``ansible-doc -l`` lists).
* Every service parameter (``parameters.PARAMETERS``) is an option of ``capf_service``, and every
  option named like a service parameter in any module states the parameter's default
  (``parameters.default_text``) in its description, since ``ansible-doc`` shows no default for it.
* Every return value that is a dict (or a list of dicts) documents its keys with ``contains``,
  unless it is keyed by names (said in its description), and has a ``sample``.
* Dates written in options and examples lie clearly in the future (or are computed from now).
"""

from __future__ import annotations

import datetime as dt
import glob
import json
import os
import re
import subprocess
import sys

import pytest
import yaml

from _opencapf import parameters

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))))
BIN = os.path.dirname(sys.executable)
MODULES = sorted(os.path.basename(path)[:-3] for path in glob.glob(os.path.join(ROOT, "plugins", "modules", "*.py"))
                 if not os.path.basename(path).startswith("_"))
_DATE = re.compile(r"\b(\d{4})-(\d{2})-(\d{2})")


def _ansible_doc(collections: str, *args: str) -> dict:
    environment = dict(os.environ, ANSIBLE_COLLECTIONS_PATH=collections, ANSIBLE_NOCOLOR="1")
    result = subprocess.run([os.path.join(BIN, "ansible-doc"), "--json", "-t", "module", *args], capture_output=True,
                            text=True, env=environment, timeout=120, check=True)
    return json.loads(result.stdout)


@pytest.fixture(scope="module")
def docs(tmp_path_factory) -> dict:
    """What ``ansible-doc`` shows of every module of the collection: ``{module: {doc, examples, return}}``."""
    base = tmp_path_factory.mktemp("collections")
    os.makedirs(base / "ansible_collections" / "opencapf")
    os.symlink(ROOT, base / "ansible_collections" / "opencapf" / "capf")
    shown = _ansible_doc(str(base), *(f"opencapf.capf.{name}" for name in MODULES))
    return {name.rsplit(".", 1)[1]: doc for name, doc in shown.items()}


def _text(description) -> str:
    return " ".join(description) if isinstance(description, list) else str(description or "")


def test_every_module_is_listed_everywhere(docs):
    assert sorted(docs) == MODULES, "ansible-doc shows every file in plugins/modules/"
    with open(os.path.join(ROOT, "docs", "modules.md"), encoding="utf-8") as handle:
        text = handle.read()
    table = text[text.index("| module | declares | engine |"):].split("\n\n", 1)[0]
    rows = re.findall(r"^\| `(\w+)` \|", table, re.M)
    assert sorted(rows) == MODULES, "docs/modules.md has one table row per module"
    with open(os.path.join(ROOT, "README.md"), encoding="utf-8") as handle:
        modules_row = next(line for line in handle if line.startswith("| modules |"))
    assert sorted(set(re.findall(r"`(capf_\w+)`", modules_row))) == MODULES, "README's modules row names each one"
    with open(os.path.join(ROOT, "meta", "runtime.yml"), encoding="utf-8") as handle:
        group = yaml.safe_load(handle)["action_groups"]["capf"]
    assert sorted(name.rsplit(".", 1)[-1] for name in group) == MODULES


def _default_stated(description: str, name: str) -> bool:
    stated = parameters.default_text(name)
    forms = {stated}
    if isinstance(parameters.PARAMETERS[name].default, list):
        forms.add(f"[{stated}]")
    if stated in ("", '""'):
        forms.add("none")
    return any(re.search(rf"[Dd]efault (?:is )?(?:V\(|C\()?{re.escape(text)}\)?(?![\w.])", description)
               for text in forms)


def test_every_service_parameter_is_an_option_of_capf_service_with_its_default(docs):
    options = docs["capf_service"]["doc"]["options"]
    missing = sorted(set(parameters.PARAMETERS) - set(options))
    assert not missing, f"capf_service does not document the service parameters {missing}"
    for module, doc in docs.items():
        for name, option in doc["doc"]["options"].items():
            if name in parameters.PARAMETERS and option.get("default") is None:
                assert _default_stated(_text(option["description"]), name), (
                    f"{module} option {name}: the description must state the default "
                    f"{parameters.default_text(name)!r} (parameters.py)")


def test_default_rule_can_fail():
    assert _default_stated("Keep-alive timer, 5–60 minutes. Default V(15).", "keepalive_minutes")
    assert _default_stated("Default is V(rsa).", "key_order")
    assert not _default_stated("Keep-alive timer, 5–60 minutes. Default V(150).", "keepalive_minutes")
    assert not _default_stated("Keep-alive timer, 5–60 minutes.", "keepalive_minutes")


def test_dict_returns_document_their_keys_with_samples(docs):
    for module, doc in docs.items():
        for name, value in (doc["return"] or {}).items():
            if value.get("type") == "dict" or (value.get("type") == "list" and value.get("elements") == "dict"):
                keyed_by_name = "keyed by" in _text(value.get("description"))
                assert value.get("contains") or keyed_by_name, f"{module} return {name} documents no keys (contains)"
                assert "sample" in value, f"{module} return {name} has no sample"


# Result keys Ansible reads as the task's own status or data (with their types): a module result that uses one for
# something else is converted (a list under skipped becomes a bool and marks the task skipped).
ANSIBLE_RESULT_KEYS = {"changed", "failed", "skipped", "unreachable", "finished", "rc", "msg", "exception", "warnings",
                       "deprecations", "diff", "ansible_facts", "ansible_stats", "ansible_job_id", "invocation"}


def test_returns_keep_clear_of_the_keys_ansible_reads_as_task_status(docs):
    for module, doc in docs.items():
        taken = sorted(set(doc["return"] or {}) & ANSIBLE_RESULT_KEYS)
        assert not taken, f"{module} returns {taken}, which Ansible reads as the task's own result keys"


def _option_texts(options: dict, path: str = ""):
    for name, option in (options or {}).items():
        yield f"{path}{name}", _text(option.get("description"))
        yield from _option_texts(option.get("suboptions"), f"{path}{name}.")


def test_dates_in_options_and_examples_lie_clearly_in_the_future(docs):
    horizon = dt.date.today() + dt.timedelta(days=365)
    for module, doc in docs.items():
        texts = [(f"option {path}", text) for path, text in _option_texts(doc["doc"]["options"])]
        texts.append(("EXAMPLES", doc["examples"] or ""))
        for where, text in texts:
            for match in _DATE.finditer(text):
                date = dt.date(*map(int, match.groups()))
                assert date > horizon, f"{module} {where}: {match.group(0)} is not clearly in the future"
