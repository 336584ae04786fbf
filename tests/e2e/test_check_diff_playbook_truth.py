"""``ansible-playbook --check --diff`` says what the real run then does: task by task, the same
``changed``, the same diff and the same returned counts, lists and status (a generated string aside,
shown as ``(to be generated)``); a second real run changes nothing. Each task changes what no earlier
task of the play changes, so that each check-mode prediction starts from the state its real run does."""

from __future__ import annotations

from support.ansible_runner import PLAY, install_collection, playbook

SEED = PLAY + """    - opencapf.capf.capf_bulk_update:
        csv_file: "{csv}"
    - opencapf.capf.capf_phone:
        name: SEP0000000000E9
        device_pool: Spare
    - opencapf.capf.capf_service:
        validity_days: 1825
"""

CHANGE = PLAY + """    - name: phone
      opencapf.capf.capf_phone:
        name: SEP0000000000E1
        certificate_operation: install_upgrade
        authentication_mode: auth_string
        generate_authentication_string: true
    - name: new phone
      opencapf.capf.capf_phone:
        name: SEP0000000000EA
        device_pool: Lobby
        certificate_operation: install_upgrade
    - name: removed phone
      opencapf.capf.capf_phone:
        name: SEP0000000000E9
        state: absent
    - name: bulk
      opencapf.capf.capf_bulk_update:
        query: {{names: [SEP0000000000E2, SEP0000000000E3, SEP0000000000E4, SEP0000000000E5]}}
        set: {{key_order: ec, certificate_operation: install_upgrade}}
    - name: template
      opencapf.capf.capf_device_template:
        name: lobby
        device_pool: Lobby
        certificate_operation: install_upgrade
    - name: service
      opencapf.capf.capf_service:
        validity_days: 365
        key_order: ec
"""
VOLATILE = ("invocation", "authentication_string", "authentication_strings")


def _results(run) -> dict:
    found = {}
    for play in run.json["plays"]:
        for task in play["tasks"]:
            for result in task["hosts"].values():
                found[task["task"]["name"]] = result
    return found


def _comparable(result: dict) -> dict:
    return {key: value for key, value in result.items() if key not in VOLATILE}


def test_check_diff_predicts_each_task_of_the_real_run(tmp_path):
    store = tmp_path / "state" / "capf.db"
    csv = tmp_path / "phones.csv"
    csv.write_text("device_name,device_pool\n" + "".join(f"SEP0000000000E{index},HQ\n" for index in range(1, 6)))
    collections = install_collection(str(tmp_path / "collections"))
    (tmp_path / "seed.yml").write_text(SEED.format(store=store, csv=csv))
    (tmp_path / "change.yml").write_text(CHANGE.format(store=store))
    playbook(collections, str(tmp_path / "seed.yml"))
    checked = _results(playbook(collections, str(tmp_path / "change.yml"), "--check", "--diff"))
    real = _results(playbook(collections, str(tmp_path / "change.yml"), "--diff"))
    assert set(checked) == set(real) and checked
    for name, result in real.items():
        assert result["changed"], name
        assert _comparable(checked[name]) == _comparable(result), name
    assert checked["phone"]["authentication_string"] == "(to be generated)"
    assert real["phone"]["authentication_string"].isdigit()
    again = _results(playbook(collections, str(tmp_path / "change.yml"), "--diff"))
    assert not [name for name, result in again.items() if result["changed"]]
