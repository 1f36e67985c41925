"""Which training passes a session audits when passes are short: the cost budget.

A session's cost per training pass is roughly fixed (its hooks, the call window, the checks'
reductions and reads: 40 to 100 µs for a small model on a CPU), so on passes of a fraction of
a millisecond it can double the step. With a budget (``audit(budget=0.02)``, the default) the
session measures both sides once the run has settled: a pass's wall time audited (a warm-up of
``WARMUP`` passes, every one audited; later the mean pass of each burst, whose first pass runs
the audit's code cold) and unaudited (``PROBE`` passes with one cheap module pre-hook that only
notes when each pass starts). When auditing adds more than the budget, it
audits bursts of ``BURST`` consecutive passes, each followed by an unaudited *gap*, a stretch of
wall time just long enough to keep the added time under the budget (at most ``MAX_GAP_S``),
during which no torch hook is installed at all; when it adds less, every pass is audited for
the rest of the run. The estimate is refreshed by a new probe every ``REPROBE`` cycles, and the
gaps are drawn with a seeded jitter so that the bursts do not fall in step with something the
loop does every N passes.

This module is the policy only (no torch, no thread): ``hooks.TorchHooks`` asks
:meth:`PassSampler.starts` when a training pass of the model that paces the run starts, and
installs the hooks that the answer needs.
"""

from __future__ import annotations

import random
import statistics
from collections import deque

__all__ = ["AUDITED", "DEFAULT_BUDGET", "GAP", "PROBED", "PassSampler", "parse_budget"]

#: the share of a training pass the audit may add before passes are sampled: with the
#: passes it leaves unaudited costing about 1%, a long run of short passes stays within the
#: 1.03x a step this project holds itself to
DEFAULT_BUDGET = 0.02


def parse_budget(value: object) -> float | None:
    """A budget as a user writes it (``0.02``, ``"0.02"``, ``"2%"``, ``"off"``): a fraction
    in (0, 1), or None for "audit every pass". Raises ValueError with the reason."""
    given = value
    if isinstance(value, str):
        text = value.strip().lower()
        if text in ("off", "none"):
            return None
        try:
            value = float(text[:-1]) / 100 if text.endswith("%") else float(text)
        except ValueError:
            raise ValueError(f"expected a fraction such as 0.02, a percentage such as 2%, or "
                             f"off; got {given!r}") from None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value < 1:
        raise ValueError(f"expected a fraction between 0 and 1 (such as 0.02) or off; got {given!r}")
    return float(value)


#: what :meth:`PassSampler.starts` answers: audit the pass, leave it unaudited but watch when
#: the next one starts (a probe), or leave everything unaudited for ``gap_seconds``
AUDITED, PROBED, GAP = "audited", "probed", "gap"


class PassSampler:
    """The audit decision for each training pass the session sees, from the passes' times."""

    #: passes audited before anything is measured: a short run (a smoke test in CI, a demo,
    #: ``--max-steps``) is audited whole, the wiring checks see the first steps, and the
    #: set-up's one-off costs are behind when the passes are measured
    WARMUP = 200
    #: unaudited passes whose starts are watched, to measure a pass's own time
    PROBE = 12
    #: consecutive passes audited in each cycle (the accumulation checks compare two
    #: consecutive backward() calls, and a hand-written update is told in four)
    BURST = 4
    #: cycles (burst and gap) between two probes
    REPROBE = 16
    #: periods of each kind the estimate is taken from
    WINDOW = 32
    #: the longest gap, in seconds: how late a problem that persists is found
    MAX_GAP_S = 1.0

    def __init__(self, budget: float, *, seed: int = 0) -> None:
        if not 0 < budget < 1:
            raise ValueError(f"budget must be between 0 and 1, got {budget!r}")
        self.budget = budget
        self._random = random.Random(seed)
        self._audited_periods: deque[float] = deque(maxlen=self.WINDOW)
        #: the mean period of each of the last bursts: a burst's first pass, after a gap, runs
        #: the audit's code cold and costs up to twice the others, which a median would hide
        self._burst_means: deque[float] = deque(maxlen=self.WINDOW // self.BURST)
        self._plain_periods: deque[float] = deque(maxlen=self.WINDOW)
        #: the start of the last pass seen and whether it was audited (None: not comparable,
        #: a gap came between)
        self._last_start: float | None = None
        self._last_audited = True
        self._phase = "warmup"
        self._left = self.WARMUP
        self._cycles = 0
        #: why every pass is audited for good (None: sampling may still happen)
        self.stopped: str | None = None
        #: the length of the gap :meth:`starts` just began (seconds)
        self.gap_seconds = 0.0
        self.audited_passes = 0
        self.probed_passes = 0
        #: gaps, their total length in seconds (of those that ended), and when the one in
        #: progress began (None: no gap in progress)
        self.gaps = 0
        self.gap_time = 0.0
        self.gap_began: float | None = None
        self._gap_until = 0.0
        #: the last estimate of the audit's share of an unaudited pass's time
        self.cost_ratio: float | None = None

    # -- the decision ---------------------------------------------------------------------------
    def starts(self, now: float) -> str:
        """A training pass starts at ``now`` (seconds): ``AUDITED``, ``PROBED`` or ``GAP``."""
        if self._last_start is not None:
            period = now - self._last_start
            (self._audited_periods if self._last_audited else self._plain_periods).append(period)
        if self._phase == "gap" and now < self._gap_until:
            # a pass the session sees inside a gap (after a pause, say): still the gap's
            self.gap_seconds = self._gap_until - now
            return GAP
        if self.gap_began is not None:  # the first pass after a gap
            self.gap_time += now - self.gap_began
            self.gap_began = None
        decision = self._decide()
        self._last_start = None if decision == GAP else now
        self._last_audited = decision == AUDITED
        if decision == AUDITED:
            self.audited_passes += 1
        elif decision == PROBED:
            self.probed_passes += 1
        else:
            self.gaps += 1
            self.gap_began = now
            self._gap_until = now + self.gap_seconds
        return decision

    def overrule(self, decision: str, now: float) -> None:
        """The pass :meth:`starts` just left unaudited (``decision``, at ``now``) is audited
        after all (a subscriber needs every pass for now), and so is a burst after it before
        the next measurement."""
        if decision == AUDITED:
            return
        if decision == PROBED:
            self.probed_passes -= 1
        elif self.gap_began == now:  # the gap this pass began is not one
            self.gaps -= 1
        elif self.gap_began is not None:  # a gap this pass falls into ends here
            self.gap_time += now - self.gap_began
        self.gap_began, self._gap_until = None, 0.0
        self._last_start, self._last_audited = now, True
        self.audited_passes += 1
        self._phase, self._left = "warmup", self.BURST - 1

    def stop(self, why: str) -> None:
        """Audit every pass from now on (a finding was made, a second model is trained...)."""
        if self.stopped is None:
            self.stopped = why
        self._phase = "all"

    def restart(self) -> None:
        """Something changed (a new optimizer): a new warm-up, and new measurements."""
        if self.stopped is None:
            self._phase, self._left = "warmup", self.WARMUP
            self._audited_periods.clear()
            self._burst_means.clear()
            self._plain_periods.clear()
            self._last_start = None

    @property
    def sampling(self) -> bool:
        """Whether some pass was left unaudited."""
        return bool(self.probed_passes or self.gaps)

    def unaudited_estimate(self, now: float) -> int:
        """Passes left unaudited by ``now``: the probed ones, and the gaps' time over a
        pass's time."""
        plain = statistics.median(self._plain_periods) if self._plain_periods else 0.0
        gaps = self.gap_time + (now - self.gap_began if self.gap_began is not None else 0.0)
        return self.probed_passes + (round(gaps / plain) if plain > 0 else 0)

    @property
    def last_unaudited(self) -> bool:
        """Whether the last pass that started was left unaudited (probed, or a gap's)."""
        return not self._last_audited

    @property
    def in_gap(self) -> bool:
        """Whether the last pass started a gap that has not ended."""
        return self.gap_began is not None

    def _decide(self) -> str:
        phase = self._phase
        if phase == "all":
            return AUDITED
        if self._left > 0:
            self._left -= 1
            return PROBED if phase == "probe" else AUDITED
        if phase == "warmup":
            return self._begin("probe", self.PROBE)
        if phase in ("probe", "burst"):
            if phase == "burst" and len(self._audited_periods) >= self.BURST:
                recent = list(self._audited_periods)[-self.BURST:]  # this burst's, all recorded
                self._burst_means.append(sum(recent) / self.BURST)
            ratio = self._ratio()
            if ratio is None:  # not measured (overruled probes): measure again
                return self._begin("warmup", self.BURST)
            if ratio <= self.budget:
                self.stop("the audit's cost is within the budget")
                return AUDITED
            if phase == "probe":
                return self._begin("burst", self.BURST)
            self._cycles += 1
            if self._cycles % self.REPROBE == 0:
                return self._begin("probe", self.PROBE)
            self._phase, self._left = "gap", 0
            self.gap_seconds = self._gap_seconds(ratio)
            return GAP
        return self._begin("burst", self.BURST)  # the first pass seen after a gap

    def _begin(self, phase: str, length: int) -> str:
        """Enter ``phase`` for ``length`` passes, this one included."""
        self._phase, self._left = phase, length - 1
        return PROBED if phase == "probe" else AUDITED

    # -- the estimate ---------------------------------------------------------------------------
    def _ratio(self) -> float | None:
        """The audit's added time over an unaudited pass's time (None: not measured)."""
        if len(self._audited_periods) < 2 or len(self._plain_periods) < 2:
            return None
        # the bursts' own cost once there are bursts; the warm-up's passes before
        audited = (statistics.median(self._burst_means) if self._burst_means
                   else statistics.median(self._audited_periods))
        plain = statistics.median(self._plain_periods)
        if plain <= 0:
            return None
        self.cost_ratio = max(0.0, audited - plain) / plain
        return self.cost_ratio

    def _gap_seconds(self, ratio: float) -> float:
        """A gap after a burst: the burst's added time spread over burst and gap stays under
        the budget; at most ``MAX_GAP_S``, jittered by up to a quarter either way."""
        plain = statistics.median(self._plain_periods)
        passes = self.BURST * ratio / self.budget - self.BURST
        seconds = min(self.MAX_GAP_S, max(plain, passes * plain))
        return seconds * self._random.uniform(0.75, 1.25)
