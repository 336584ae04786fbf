"""Stand-in for ansible-test's downloaded get-pip script.

ansible-test bootstraps pip into each virtual environment it creates by running a script it
downloads from a host that package-registry-only networks cannot reach. This script does the
same job offline: it installs the pip wheel bundled with CPython (ensurepip), then lets that pip
install the exact packages ansible-test asked for from the package index.
"""

import ensurepip
import subprocess
import sys

# get-pip's own options, which pip itself does not know.
GET_PIP_ONLY = ("--no-setuptools", "--no-wheel")

ensurepip.bootstrap(upgrade=True)
arguments = [argument for argument in sys.argv[1:] if argument not in GET_PIP_ONLY]
sys.exit(subprocess.call([sys.executable, "-m", "pip", "install", "--upgrade", *arguments]))
