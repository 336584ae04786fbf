# Copyright: contributors to opencapf.capf
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The CAPF wire protocol (TCP 3804), sans-I/O: codec, server session and phone session."""
