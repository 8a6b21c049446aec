"""``python -m bronchonav.cli``: the ``bronchonav`` command."""

from bronchonav.cli import run

run()
