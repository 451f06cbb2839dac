"""``effnet bench``: the command (``command``) over small runners (``runners``), timed trials
(``trials``), the report writers (``report``) and the machine probe (``machine``).

The CLI finds every command's ``DESCRIPTION``, ``add_arguments`` and ``run`` on its module.
"""

from .command import DESCRIPTION, add_arguments, run

__all__ = ["DESCRIPTION", "add_arguments", "run"]
