"""capf_bulk_update --diff over thousands of phones: a summary by default (counts per changed
setting and the first phones), every phone with diff_format full; a real ansible-playbook run
with the default callback, as an operator reads it."""

from __future__ import annotations

import re

from support.ansible_runner import PLAY, install_collection, playbook

PHONES = 2000

PLAYBOOK = PLAY + """    - name: Import the phones
      opencapf.capf.capf_bulk_update:
        csv_file: "{csv}"
    - name: Arm every phone (default diff)
      opencapf.capf.capf_bulk_update:
        query: {{name_pattern: "SEP*"}}
        set: {{certificate_operation: install_upgrade, key_order: ec}}
    - name: Move every phone (full diff)
      opencapf.capf.capf_bulk_update:
        query: {{name_pattern: "SEP*"}}
        set: {{device_pool: Moved}}
        diff_format: full
"""


def _task_output(text: str, name: str) -> str:
    """The lines the default callback printed for task ``name`` (up to the next task or the recap)."""
    start = text.index(f"TASK [{name}]")
    end = min(index for index in (text.find("TASK [", start + 1), text.find("PLAY RECAP", start + 1)) if index != -1)
    return text[start:end]


def test_bulk_diff_is_a_summary_above_the_threshold(tmp_path):
    csv = tmp_path / "phones.csv"
    rows = "".join(f"SEP00CD{index:08X},Pool{index % 7}\n" for index in range(PHONES))
    csv.write_text("device_name,device_pool\n" + rows)
    book = tmp_path / "diff.yml"
    book.write_text(PLAYBOOK.format(store=tmp_path / "state" / "capf.db", csv=csv))
    collections = install_collection(str(tmp_path / "collections"))
    run = playbook(collections, str(book), "--diff", env={"ANSIBLE_STDOUT_CALLBACK": "ansible.builtin.default"},
                   timeout=300)
    text = run.stdout
    imported = _task_output(text, "Import the phones")
    armed = _task_output(text, "Arm every phone (default diff)")
    moved = _task_output(text, "Move every phone (full diff)")
    # The summaries: short, with the counts per setting, and the first 20 phones by name.
    for output in (imported, armed):
        assert len(output.splitlines()) < 400, output[:3000]
        assert len(set(re.findall(r"SEP00CD[0-9A-F]{8}", output))) == 20
        assert "SEP00CD00000000" in output and "SEP00CD00000013" in output and "SEP00CD00000014" not in output
    assert re.search(r'"phones_inserted": %d' % PHONES, imported)
    assert re.search(r'"phones_changed": %d' % PHONES, armed)
    assert re.search(r'"certificate_operation": %d' % PHONES, armed) and re.search(r'"key_order": %d' % PHONES, armed)
    assert "diff_format: full" in armed
    # The full diff names every phone.
    assert len(set(re.findall(r"SEP00CD[0-9A-F]{8}", moved))) == PHONES and '"summary"' not in moved
    assert len(moved.splitlines()) > 4 * PHONES
