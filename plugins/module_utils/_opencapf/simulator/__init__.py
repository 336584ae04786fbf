# Copyright: contributors to opencapf.capf
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The phone simulator: on-disk phone identities, a test manufacturing CA, the TLS client with
retries and Table 2 address selection, and a fleet runner."""
