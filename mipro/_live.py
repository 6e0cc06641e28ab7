"""The CLI's live view of a job: a progress bar per phase while its events arrive, then the
result and a leaderboard table.

Transport-free: `LiveView.handle` takes each event as the event stream delivers it (a dict
with `seq`, `type`, `message`, `data`, `created_at`, `terminal`), and `render_result` takes
the finished job as GetJob returns it. Both draw on a rich `Console`:

- on a terminal the phases are animated bars (preflight, bootstrap, propose, evaluate, test),
  with the best so far and the last few notable events under them;
- anywhere else (CI logs, pipes, captured output) nothing is animated and no control code is
  written: phase changes with their progress, new bests, failures and events the view does
  not know are printed as plain lines.

The view is tolerant of the engine it watches: an unknown event type is shown as a one-line
log, a missing or malformed field is shown as unknown rather than raising, and the Synth
SDK's names (`learning.policy.mipro.<type>`, `job.completed`) are read as ours.
"""

from __future__ import annotations

import re
import time
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any

from rich import box
from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.progress import (
    BarColumn,
    Progress,
    ProgressColumn,
    SpinnerColumn,
    Task,
    TaskID,
    TextColumn,
)
from rich.table import Table
from rich.text import Text

__all__ = ["LiveView", "event_type", "is_terminal_event", "leaderboard_table", "render_result"]

#: The engine's phases, in the order a job runs them.
PHASES = ("preflight", "bootstrap", "propose", "evaluate", "test")
TERMINAL_TYPES = frozenset({"job.succeeded", "job.failed", "job.cancelled"})

_SYNTH_PREFIX = "learning.policy.mipro."
_TYPE_ALIASES = {
    "job.completed": "job.succeeded",
    "job.canceled": "job.cancelled",
    "candidate.new_best": "best.updated",
    "candidate.evaluated": "candidate.scored",
}
_PHASE_ALIASES = {"search": "evaluate", "screen": "evaluate", "val": "evaluate"}
_PROGRESS_PHASES = {"bootstrap.progress": "bootstrap", "val.progress": "evaluate",
                    "test.progress": "test"}
#: Events the view folds into its bars instead of printing them off a terminal.
_QUIET_TYPES = frozenset({*_PROGRESS_PHASES, "candidate.scored", "job.created"})
_UNITS = {"propose": "rounds"}
_COUNT_IN_MESSAGE = re.compile(r"(\d+)\s*/\s*(\d+)")
#: Off a terminal, rollout failures past this many are counted but not printed one by one.
_PLAIN_FAILURES_SHOWN = 10
_LOG_LINES = 5
_INSTRUCTION_WIDTH = 70


def event_type(event: Mapping[str, Any]) -> str:
    """The event's type in our names: the Synth prefix dropped, Synth aliases mapped."""
    raw = str(event.get("type") or "")
    if raw.startswith(_SYNTH_PREFIX):
        raw = raw[len(_SYNTH_PREFIX):]
    return _TYPE_ALIASES.get(raw, raw)


def is_terminal_event(event: Mapping[str, Any]) -> bool:
    """Whether the event ends its job (succeeded, failed or cancelled)."""
    return event.get("terminal") is True or event_type(event) in TERMINAL_TYPES


def _data(event: Mapping[str, Any]) -> Mapping[str, Any]:
    data = event.get("data")
    return data if isinstance(data, Mapping) else {}


def _int(value: Any) -> int | None:
    """A count as JSON carries it: an int, a float from a protobuf Struct, or a string."""
    if isinstance(value, bool):
        return None
    try:
        return int(float(value))
    except (TypeError, ValueError):
        return None


def _float(value: Any) -> float | None:
    if isinstance(value, bool) or value is None:
        return None
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def _score(value: Any) -> str:
    number = _float(value)
    return "n/a" if number is None else f"{number:.3f}"


def _one_line(text: str, width: int) -> str:
    text = " ".join(text.split())
    return text if len(text) <= width else text[: width - 1] + "…"


def _phase_name(value: Any) -> str:
    name = str(value or "").strip() or "?"
    return _PHASE_ALIASES.get(name, name)


@dataclass
class _Phase:
    """What is known of one phase: rollouts (or rounds) done and planned, and a detail."""

    name: str
    done: int = 0
    planned: int | None = None
    detail: str = ""
    failures: int = 0
    ended: bool = True
    #: Why the job stopped in this phase (`job failed`, `job cancelled`); empty otherwise.
    stopped: str = ""
    #: Seconds spent in the phase so far; a phase may run more than once (evaluate does).
    seconds: float = 0.0
    _since: float | None = None
    # The rollout batch in flight: the engine counts progress per batch, the bar per phase.
    _base: int = 0
    _batch_done: int = 0
    _batch_planned: int | None = None

    def progress(self, done: int | None, planned: int | None) -> None:
        """Folds a progress report in. Bootstrap counts are for the whole phase; evaluate and
        test count per batch, so a count that starts again is a new batch."""
        if done is None:
            done = self._batch_done + 1
        if self.name == "bootstrap":
            self.done = max(self.done, done)
            self.planned = planned if planned is not None else self.planned
            return
        complete = self._batch_planned is not None and self._batch_done >= self._batch_planned
        if done < self._batch_done or complete:
            self._base += self._batch_done
        self._batch_done, self._batch_planned = done, planned
        self.done = self._base + done
        if planned is not None:
            self.planned = self._base + planned

    def begin(self) -> None:
        self.ended, self._since = False, time.monotonic()

    def end(self) -> None:
        self.seconds = self.elapsed()
        self.ended, self._since = True, None

    def elapsed(self) -> float:
        running = 0.0 if self._since is None else time.monotonic() - self._since
        return self.seconds + running

    def count(self) -> str:
        if self.name == "preflight":
            return "passed" if self.done else "not passed" if self.ended else "checking"
        unit = _UNITS.get(self.name, "rollouts")
        counted = f"{self.done}/{self.planned}" if self.planned is not None else str(self.done)
        return f"{counted} {unit}"

    def summary(self) -> str:
        """The phase in one line: its count, failures and detail."""
        parts = [self.count()]
        if self.failures:
            parts.append(f"{self.failures} failed")
        if self.detail:
            parts.append(self.detail)
        if self.stopped:
            parts.append(self.stopped)
        return ", ".join(parts)


@dataclass
class _Board:
    """The job as far as its events tell: phases, the best so far, failures, recent notes."""

    phases: dict[str, _Phase] = field(default_factory=dict)
    current: str = ""
    best: str = ""
    failures: int = 0
    scored: set[int] = field(default_factory=set)
    proposed: int = 0
    log: deque[str] = field(default_factory=lambda: deque(maxlen=_LOG_LINES))

    def phase(self, name: str) -> _Phase:
        if name not in self.phases:
            self.phases[name] = _Phase(name)
        return self.phases[name]


def _phase_of(task: Task) -> _Phase:
    phase = task.fields["phase"]
    assert isinstance(phase, _Phase)
    return phase


class _StateColumn(SpinnerColumn):
    """A spinner while the phase runs, a tick once it has ended."""

    def render(self, task: Task) -> RenderableType:
        phase = _phase_of(task)
        if phase.stopped:
            return Text("✗", style="red")
        if phase.ended:
            return Text("✓", style="green")
        return super().render(task)


class _CountColumn(ProgressColumn):
    def render(self, task: Task) -> RenderableType:
        phase = _phase_of(task)
        failed = Text(f", {phase.failures} failed", style="red") if phase.failures else ""
        return Text.assemble(phase.count(), failed)


class _ElapsedColumn(ProgressColumn):
    def render(self, task: Task) -> RenderableType:
        minutes, seconds = divmod(int(_phase_of(task).elapsed()), 60)
        return Text(f"{minutes}:{seconds:02d}", style="progress.elapsed")


class _DetailColumn(ProgressColumn):
    def render(self, task: Task) -> RenderableType:
        return Text(_phase_of(task).detail, style="cyan", overflow="ellipsis", no_wrap=True)


class LiveView:
    """Shows a job's progress from its events; use it as a context manager around the stream.

    `settings` is the job's `policy_optimization` (as submitted or as GetJob echoes it); when
    given, bars whose size the events do not tell (the proposal rounds, say) get a total.
    """

    def __init__(self, console: Console, settings: Mapping[str, Any] | None = None) -> None:
        self.console = console
        self.finished = False
        self._animated = console.is_terminal and not console.is_dumb_terminal
        self._board = _Board()
        self._last_seq = 0
        self._planned = _planned_from(settings)
        self._progress = Progress(
            _StateColumn(), TextColumn("{task.description:<9}"),
            BarColumn(bar_width=24, complete_style="cyan", finished_style="green"),
            _CountColumn(), _ElapsedColumn(), _DetailColumn(), console=console,
            auto_refresh=False)
        self._tasks: dict[str, TaskID] = {}
        self._live: Live | None = None

    def __enter__(self) -> LiveView:
        if self._animated:
            # Refreshed by rich's own thread, which only reads: the bars' totals go through
            # Progress.update (locked), everything else is read from plain attributes.
            self._live = Live(Group(self._progress, _Notes(self._board)), console=self.console,
                              refresh_per_second=8, redirect_stderr=False)
            self._live.start()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 traceback: TracebackType | None) -> None:
        self._end_phase()
        if self._live is not None:
            self._live.stop()
            self._live = None

    @property
    def last_seq(self) -> int:
        """The highest `seq` handled: where a resumed stream starts (`since_seq`)."""
        return self._last_seq

    # -- input -------------------------------------------------------------------------------

    def handle(self, event: Mapping[str, Any]) -> None:
        """Folds one event in and shows it. Events already seen (by `seq`) are ignored, so a
        stream resumed after an interruption never counts anything twice."""
        seq = _int(event.get("seq"))
        if seq is not None:
            if seq <= self._last_seq:
                return
            self._last_seq = seq
        kind = event_type(event)
        board, data = self._board, _data(event)
        message = str(event.get("message") or "")
        if kind == "phase.started":
            named = str(data.get("phase") or "").strip() or message.partition(" ")[0]
            if named:
                self._start_phase(_phase_name(named))
        elif kind in _PROGRESS_PHASES:
            name = _phase_name(_PROGRESS_PHASES[kind])
            done, planned = _counts(data, message)
            if planned is None:
                planned = self._planned.get(name)
            self._phase_for_event(name).progress(done, planned)
        elif kind == "preflight.passed":
            phase = self._phase_for_event("preflight")
            phase.done, phase.planned, phase.detail = 1, 1, "task app healthy"
        elif kind == "bootstrap.completed":
            phase = self._phase_for_event("bootstrap")
            phase.detail = f"baseline {_score(data.get('mean_reward'))}"
        elif kind == "proposals.received":
            self._proposals(data)
        elif kind == "candidate.scored":
            index = _int(data.get("candidate"))
            if index is not None:
                board.scored.add(index)
            self._phase_for_event("evaluate").detail = self._evaluate_detail()
        elif kind == "best.updated":
            board.best = (f"candidate {data.get('candidate', '?')} at "
                          f"{_score(data.get('mean_score'))}")
            self._phase_for_event("evaluate").detail = self._evaluate_detail()
        elif kind == "rollout.failed":
            board.failures += 1
            name = _phase_name(data.get("phase") or board.current)
            self._phase_for_event(name).failures += 1
        elif kind == "test.completed":
            self._phase_for_event("test").detail = (
                f"best {_score(data.get('best_test_score'))}, "
                f"baseline {_score(data.get('baseline_test_score'))}")
        if is_terminal_event(event):
            self.finished = True
            if kind != "job.succeeded" and board.current:
                board.phase(board.current).stopped = kind.replace(".", " ") or "job ended"
            self._end_phase()
        self._show(event, kind, message)

    def note(self, text: str) -> None:
        """A line of the client's own (a stream interrupted, say), shown with the events."""
        if self._animated:
            self._board.log.append(text)
        else:
            self._print(f"  {text}")

    # -- phases ------------------------------------------------------------------------------

    def _start_phase(self, name: str) -> None:
        if name == self._board.current:
            return
        self._end_phase()
        self._board.current = name
        phase = self._board.phase(name)
        phase.begin()
        if phase.planned is None:
            phase.planned = self._planned.get(name)
        self._sync(phase)

    def _end_phase(self) -> None:
        name = self._board.current
        if not name:
            return
        phase = self._board.phase(name)
        phase.end()
        self._board.current = ""
        self._sync(phase)
        if not self._animated:
            self._print(f"  {name}: {phase.summary()}")

    def _phase_for_event(self, name: str) -> _Phase:
        """The phase an event is about; one the stream never announced (a view started with
        `since_seq`, or an engine that skips `phase.started`) is started here."""
        if name not in self._board.phases and name != self._board.current:
            self._start_phase(name)
        return self._board.phase(name)

    def _proposals(self, data: Mapping[str, Any]) -> None:
        phase = self._phase_for_event("propose")
        round_number = _int(data.get("round"))
        phase.done = max(phase.done + 1 if round_number is None else round_number, phase.done)
        candidates = data.get("candidates")
        self._board.proposed += len(candidates) if isinstance(candidates, list) else 0
        dropped = _int(data.get("duplicates_dropped")) or 0
        phase.detail = f"{self._board.proposed} candidates" + (
            f", {dropped} duplicates dropped" if dropped else "")

    def _evaluate_detail(self) -> str:
        board = self._board
        parts = [f"{len(board.scored)} candidates scored"] if board.scored else []
        if board.best:
            parts.append(f"best: {board.best}")
        return ", ".join(parts)

    # -- output ------------------------------------------------------------------------------

    def _show(self, event: Mapping[str, Any], kind: str, message: str) -> None:
        if self._animated:
            if kind not in _QUIET_TYPES and kind not in ("phase.started", "best.updated"):
                self._board.log.append(_one_line(message or kind or "(event)", 100))
            for phase in self._board.phases.values():
                self._sync(phase)
            return
        if kind in _QUIET_TYPES or not (kind or message):
            return
        if kind == "rollout.failed":
            if self._board.failures > _PLAIN_FAILURES_SHOWN:
                return
            if self._board.failures == _PLAIN_FAILURES_SHOWN:
                message += " (further rollout failures are counted, not shown)"
        style = "red" if kind in ("job.failed", "rollout.failed") else ""
        self._print(_format_event(event, kind, message), style)

    def _print(self, line: str, style: str = "") -> None:
        """One plain line, as text (never markup), left for the log's reader to wrap."""
        self.console.print(Text(line, style=style), soft_wrap=True)

    def _sync(self, phase: _Phase) -> None:
        """Hands the phase's counts to its bar (made on first sight, in the order seen)."""
        total = 1 if phase.name == "preflight" else phase.planned
        if total is None and phase.ended:
            total = max(phase.done, 1)  # as far as it went: a full bar, not a pulsing one
        if phase.name not in self._tasks:
            self._tasks[phase.name] = self._progress.add_task(
                phase.name, total=total, completed=phase.done, phase=phase)
        else:
            self._progress.update(self._tasks[phase.name], total=total, completed=phase.done)


class _Notes:
    """The lines under the bars: the best so far, failures, and the last notable events."""

    def __init__(self, board: _Board) -> None:
        self._board = board

    def __rich__(self) -> RenderableType:
        board = self._board
        lines: list[Text] = []
        if board.best or board.failures:
            status = [f"best so far: {board.best}"] if board.best else []
            if board.failures:
                status.append(f"{board.failures} rollouts failed")
            lines.append(Text("  " + "; ".join(status), style="bold"))
        # A snapshot: the events arrive on another thread than the one drawing.
        lines.extend(Text(f"  {line}", style="dim") for line in tuple(board.log))
        return Text("\n").join(lines)


def _counts(data: Mapping[str, Any], message: str) -> tuple[int | None, int | None]:
    """Done and planned from `data`, else from an `N/M` in the message."""
    done, planned = _int(data.get("done")), _int(data.get("planned"))
    if done is None or planned is None:
        match = _COUNT_IN_MESSAGE.search(message)
        if match:
            done = int(match.group(1)) if done is None else done
            planned = int(match.group(2)) if planned is None else planned
    return done, planned


def _planned_from(settings: Mapping[str, Any] | None) -> dict[str, int]:
    """The sizes the job's settings tell ahead of its events: bootstrap seeds, rounds."""
    mipro = settings.get("mipro") if isinstance(settings, Mapping) else None
    if not isinstance(mipro, Mapping):
        return {}
    planned: dict[str, int] = {}
    seeds = mipro.get("bootstrap_train_seeds")
    if isinstance(seeds, list):
        planned["bootstrap"] = len(seeds)
    rounds = _int(mipro.get("num_iterations"))
    if rounds:
        planned["propose"] = rounds
    return planned


def _format_event(event: Mapping[str, Any], kind: str, message: str) -> str:
    seq = event.get("seq", "?")
    return f"  [{seq:>3}] {kind or '?':<20} {message}"


# -- the finished job -----------------------------------------------------------------------

def _indented(text: str) -> str:
    return "\n".join("  " + line for line in text.splitlines()) if text else "  (none)"


def render_result(job: Mapping[str, Any], console: Console) -> None:
    """The finished job (GetJob's JSON): status, error, scores, counts, the baseline and best
    instructions, then the leaderboard in the order the API ranks it (best first)."""
    def line(text: str, style: str = "") -> None:
        console.print(Text(text, style=style), soft_wrap=True)

    mipro = job.get("policy_optimization", {}).get("mipro", {})
    status = str(job.get("status", "?"))
    line("")
    line(f"job {job.get('job_id', '?')}: {status} ({job.get('termination_reason') or '-'})",
         "bold green" if status == "succeeded" else "bold red")
    if job.get("error"):
        line(f"error: {job['error']}", "red")
    line(f"mode: {mipro.get('proposer', {}).get('mode') or 'instruction_only'}")
    line(f"baseline score: {_score(job.get('baseline_score'))}"
         f" (mean validation reward on {len(mipro.get('val_seeds', []))} seeds)")
    line(f"best score:     {_score(job.get('best_score'))}", "bold")
    if "best_test_score" in job or "baseline_test_score" in job:
        line(f"held-out test score on {len(mipro.get('test_seeds', []))} other seeds: "
             f"best {_score(job.get('best_test_score'))}, "
             f"baseline {_score(job.get('baseline_test_score'))}")
    line(f"rollouts: {job.get('rollouts_completed', 0)} completed, "
         f"{job.get('rollouts_failed', 0)} failed; tokens: policy {job.get('policy_tokens', 0)}, "
         f"proposer {job.get('proposer_tokens', 0)}")
    causes = job.get("failures_by_cause")
    if isinstance(causes, Mapping) and causes:
        line("failed rollouts by cause: "
             + ", ".join(f"{cause} x{count}" for cause, count in causes.items()), "red")
    line("baseline instruction:")
    line(_indented(str(job.get("baseline_instruction") or "")))
    line("best instruction:")
    line(_indented(str(job.get("best_instruction") or "")))
    candidates = [c for c in job.get("candidates") or [] if isinstance(c, Mapping)]
    if not candidates:
        line("leaderboard: no candidate was scored")
        return
    line("leaderboard (mean validation reward, best first):")
    console.print(leaderboard_table(candidates))


def leaderboard_table(candidates: list[Mapping[str, Any]]) -> Table:
    """One row per candidate, in the given order; an excluded candidate says why."""
    table = Table(box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False)
    for header in ("#", "mean score", "seeds", "failures"):
        table.add_column(header, justify="right", no_wrap=True)
    table.add_column("tip", no_wrap=True)
    demos = any(c.get("demo_set_id") for c in candidates)
    if demos:
        table.add_column("demos", no_wrap=True)
    # The one column that gives way to a narrow console, cut with an ellipsis (the cells do
    # not wrap).
    table.add_column("instruction")
    for candidate in candidates:
        failures = str(candidate.get("failures", 0))
        if candidate.get("excluded_reason"):
            failures += f" (excluded: {candidate['excluded_reason']})"
        table.add_row(
            str(candidate.get("index", "?")), _score(candidate.get("mean_score")),
            str(candidate.get("seeds_scored", 0)), failures, str(candidate.get("tip") or ""),
            *([str(candidate.get("demo_set_id") or "")] if demos else []),
            Text(_one_line(str(candidate.get("instruction") or ""), _INSTRUCTION_WIDTH),
                 no_wrap=True, overflow="ellipsis"))
    return table
