"""The OMS service: approved orders, risk commands and chains in; executions and outcomes out
(``python -m services.oms.main``).

After every round (lockstep) or batch (free-running) in which it handled something, the OMS writes
:meth:`~services.oms.engine.OrderManager.snapshot` to Redis (``dreambot:positions``) and, when orders or
positions changed, appends a metrics record to the OMS metrics stream (``dreambot:oms_metrics``,
renamed by ``OMS_METRIC_STREAM``). A Redis outage never stops it: quotes keep being worked (stops,
take-profits, expiries), failed writes are logged and counted, and the latest snapshot is written
once Redis answers again.

The audit log (``OMS_AUDIT_PATH``, rotated at ``OMS_AUDIT_ROTATE_MB``) is written once per record
even across restarts: a restarted OMS rebuilds its state by handling its inputs again, and the
records that produces which the log already holds are not written twice (:class:`ResumableAudit`).

Built by the composition root (:func:`services.app.services.run_stage`) from the session's
SessionConfig; ``--help`` lists the flags, ``--check`` validates the configuration and exits.
"""

from __future__ import annotations

from services.app.services import run_stage


def main() -> int:
    return run_stage("oms")


if __name__ == "__main__":
    raise SystemExit(main())
