# Copyright: contributors to opencapf.capf
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Third-party CAs that sign phone LSCs: Online CA (EST, Microsoft AD CS) and Offline CA."""
