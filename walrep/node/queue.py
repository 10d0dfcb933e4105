"""The one effect queue every executor drains (the ordering rule of ``walrep.node.effects``).

An input's effects are appended; an effect whose result is known at once (a read, a
truncation, a write in the simulator) pushes the effects of that result's input to the
back of the same queue. So effects run in the order the core emitted them, a result
never overtakes what was emitted before it was asked for, and nothing recurses however
many effects one input produces.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable

from walrep.node.effects import Effect


class EffectQueue:
    def __init__(
        self, carry_out: Callable[[Effect], None], running: Callable[[], bool] = lambda: True
    ) -> None:
        self._carry_out = carry_out
        self._running = running  # false once the executor stops (a crash in the simulator)
        self._queue: deque[Effect] = deque()
        self._draining = False

    def push(self, effects: Iterable[Effect]) -> None:
        """Queue effects without draining (from inside ``carry_out``)."""
        self._queue.extend(effects)

    def feed(self, effects: Iterable[Effect]) -> bool:
        """Queue effects and carry everything out, FIFO. True for the outermost call
        (the queue is empty when it returns); False when called from inside a drain."""
        self._queue.extend(effects)
        if self._draining:
            return False
        self._draining = True
        try:
            while self._queue and self._running():
                self._carry_out(self._queue.popleft())
        finally:
            self._draining = False
        return True
