"""Coverage-guided fuzzing (atheris, libFuzzer) of the CAPF codec and the server session.

    python tests/fuzz/fuzz_protocol.py WORK_CORPUS tests/fuzz/corpus -max_total_time=600

libFuzzer writes the inputs it finds to the first corpus directory only, so pass a scratch
directory first and the committed seeds second (``scripts/fuzz`` does). A crash leaves
``crash-*`` with the input that caused it; replay one with ``python tests/fuzz/fuzz_protocol.py FILE``.
"""

from __future__ import annotations

import atexit
import shutil
import sys
import tempfile

import atheris

with atheris.instrument_imports(include=["_opencapf"]):
    import capf_session as world

_DIRECTORY = tempfile.mkdtemp(prefix="capf-fuzz-")
atexit.register(shutil.rmtree, _DIRECTORY, True)
_STORE = world.build_store(_DIRECTORY)
_RUNS = [0]


def test_one_input(data: bytes) -> None:
    _RUNS[0] += 1
    if _RUNS[0] % 64 == 0:  # runs may complete or fail operations: keep every scenario reachable
        world.reset(_STORE)
    world.run_one(_STORE, data)


def main() -> None:
    world.reset(_STORE)
    atheris.Setup(sys.argv, test_one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
