"""``python -m dreambot_operator [kopf run options]``: run the operator with kopf.

Equivalent to ``kopf run -m dreambot_operator ...``; any kopf ``run`` option may follow, e.g.
``--standalone``, ``--namespace NS``, ``--all-namespaces``, ``--liveness http://0.0.0.0:8080/healthz``.
"""

from __future__ import annotations

import sys

from kopf.cli import main as kopf_main


def main(argv: list[str] | None = None) -> None:
    args = list(sys.argv[1:] if argv is None else argv)
    kopf_main(args=["run", "-m", "dreambot_operator", *args], prog_name="dreambot-operator")


if __name__ == "__main__":
    main()
