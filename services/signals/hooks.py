"""The signals service: features and chains in, SignalIntents out (``python -m services.signals.main``).

Exports ``dreambot_tick_to_intent_seconds``: in a lockstep replay, from the ingest injecting the
market-data event to the intent being published; free-running, from the intent's event time when it is
recent (a live feed). Settings come from the environment (``.env.example``).
"""

from __future__ import annotations

from services.core.events import Event, SignalIntent
from services.core.stage import Output
from services.runtime.service import ServiceHooks


class SignalHooks(ServiceHooks):
    def handled(self, topic: str, event: Event, outputs: list[Output], seconds: float) -> None:
        super().handled(topic, event, outputs, seconds)
        for out in outputs:
            if isinstance(out.event, SignalIntent):
                age = self.root_age_s(out.event.ts)
                if age is not None:
                    self.metrics.observe(self.metrics.tick_to_intent, age)
