"""Training logs: a JSONL file (the record scripts read), TensorBoard scalars, and a tqdm bar.

Only the main process logs. Throughput is measured over each logging window, in LM positions per
second (what the backbone processes: text tokens + speech groups) and speech codes per second (what
the speech covers). Each speech position carries G codes, so MTP covers G times more speech per
position than NTP — the point of it (study §2.2).
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

LOG_FILE = "log.jsonl"


class Monitor:
    """Accumulates step statistics and writes a row every ``log_every`` steps."""

    def __init__(
        self,
        out_dir: Path,
        *,
        total_steps: int,
        start_step: int,
        enabled: bool,
        tensorboard: bool,
        show_progress: bool,
    ) -> None:
        self.enabled = enabled
        self.path = out_dir / LOG_FILE
        self._tb = None
        self._bar = None
        if enabled:
            out_dir.mkdir(parents=True, exist_ok=True)
            if tensorboard:
                from torch.utils.tensorboard import SummaryWriter  # imported only when wanted

                self._tb = SummaryWriter(str(out_dir / "tensorboard"))
            self._bar = tqdm(total=total_steps, initial=start_step, desc="train", unit="step", disable=not show_progress)
        self._window_start = time.perf_counter()
        self._sums: dict[str, float] = {}
        self._steps = 0

    def add(self, **values: float) -> None:
        """Accumulate one optimizer step's values (losses are averaged, counts summed at write time)."""
        for key, value in values.items():
            self._sums[key] = self._sums.get(key, 0.0) + float(value)
        self._steps += 1
        if self._bar is not None:
            self._bar.update(1)

    def write(self, step: int, extra: dict[str, Any] | None = None) -> dict[str, Any]:
        """Close the window: averages, throughput; write JSONL + TensorBoard; show on the bar."""
        # Throughput over the steps' own time when they report it (evaluation/checkpoints excluded).
        seconds = self._sums.pop("seconds", time.perf_counter() - self._window_start)
        n = max(self._steps, 1)
        row: dict[str, Any] = {"step": step}
        for key, total in self._sums.items():
            if key in ("positions", "speech_codes"):
                row[f"{key}_per_s"] = total / seconds if seconds > 0 else math.nan
            else:
                row[key] = total / n
        row["step_seconds"] = seconds / n
        row.update(extra or {})
        self._sums, self._steps, self._window_start = {}, 0, time.perf_counter()
        self.record(row)
        if self._bar is not None:
            self._bar.set_postfix(
                loss=f"{row.get('loss', math.nan):.3f}", tok_s=f"{row.get('positions_per_s', 0):.0f}", refresh=False
            )
        return row

    def record(self, row: dict[str, Any]) -> None:
        """Append one row as it is (validation results, run summaries)."""
        if not self.enabled:
            return
        with self.path.open("a") as f:
            f.write(json.dumps(row) + "\n")
        if self._tb is not None:
            for key, value in row.items():
                if key != "step" and isinstance(value, (int, float)) and math.isfinite(value):
                    self._tb.add_scalar(key, value, row["step"])

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
        if self._tb is not None:
            self._tb.close()
