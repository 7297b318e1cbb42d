"""Shared helpers of the benchmark scripts: environment record, tables, JSON output, timing, memory.

Not a library module: the scripts import it from their own folder (``python benchmarks/<name>.py`` puts
``benchmarks/`` on ``sys.path``).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import statistics
import subprocess
import threading
import time
from pathlib import Path

RESULTS_DIR = Path(__file__).resolve().parent / "results"


def add_common_arguments(parser: argparse.ArgumentParser, name: str) -> None:
    """--device, --tiny, --output, --threads: the options every benchmark script has."""
    parser.add_argument("--device", default="auto",
                        help="cpu, cuda, cuda:N or auto (cuda when available) (default: auto)")
    parser.add_argument("--tiny", action="store_true",
                        help="CPU smoke-test sizes (seconds); numbers are meaningless, only that it runs")
    parser.add_argument("--output", default=None,
                        help=f"JSON file to write (default: benchmarks/results/{name}_<device>.json; "
                             "with --tiny nothing is written unless --output is given)")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch CPU threads (default: torch's choice = the machine's cores)")


def resolve_device(name: str):
    import torch

    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit(f"--device {name}: CUDA is not available on this machine; use --device cpu")
    return device


def environment(device) -> dict:
    """Machine, library versions and date: what a reader needs to compare two result files."""
    import torch

    env = {
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "device": str(device),
        "cpu": _cpu_name(),
        "cpu_cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "python": platform.python_version(),
        "torch": torch.__version__,
    }
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        env["gpu"] = props.name
        env["gpu_memory_gib"] = round(props.total_memory / 2**30, 1)
        env["cuda"] = torch.version.cuda
    for module in ("transformers", "datasets", "peft", "accelerate", "numpy", "pyarrow"):
        try:
            env[module] = __import__(module).__version__
        except ImportError:
            pass
    try:
        import hm_hf

        env["hm_hf"] = getattr(hm_hf, "__version__", "unknown")
    except ImportError:
        pass
    env["git_commit"] = _git_commit()
    return env


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _git_commit() -> str | None:
    """HEAD's commit, with "+dirty" when tracked files other than results differ from it (the numbers are
    then not HEAD's code's)."""
    root = Path(__file__).resolve().parent.parent
    try:  # git itself: also right in a worktree or with packed refs, where .git/HEAD's ref file is elsewhere
        commit = subprocess.run(["git", "-C", str(root), "rev-parse", "--short=12", "HEAD"], capture_output=True,
                                text=True, timeout=30, check=True).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    try:
        changed = subprocess.run(["git", "-C", str(root), "diff", "--quiet", "HEAD", "--", ".",
                                  ":(exclude)benchmarks/results"], capture_output=True, timeout=30).returncode == 1
    except (OSError, subprocess.SubprocessError):
        changed = False
    return commit + ("+dirty" if changed else "")


def default_output(name: str, device, tiny: bool, output: str | None) -> Path | None:
    if output:
        return Path(output)
    if tiny:
        return None
    return RESULTS_DIR / f"{name}_{device.type}.json"


def write_json(path: Path | None, payload: dict) -> None:
    """Atomic write of the results (hm_hf.fileio); no-op for None."""
    if path is None:
        return
    from hm_hf.fileio import atomic_write_text

    atomic_write_text(path, json.dumps(payload, indent=2) + "\n")
    print(f"wrote {path}")


def format_table(rows: list[dict], columns: list[tuple[str, str, str]]) -> str:
    """rows -> aligned text table; columns = (key, header, format spec such as '.1f' or '')."""
    cells = [[header for _, header, _ in columns]]
    for row in rows:
        line = []
        for key, _, spec in columns:
            value = row.get(key)
            if value is None:
                line.append("-")
            elif spec and isinstance(value, (int, float)):
                line.append(format(value, spec))
            else:
                line.append(str(value))
        cells.append(line)
    widths = [max(len(r[i]) for r in cells) for i in range(len(columns))]
    out = []
    for n, line in enumerate(cells):
        out.append("  ".join(c.rjust(w) if n and i else c.ljust(w) for i, (c, w) in enumerate(zip(line, widths))))
        if n == 0:
            out.append("  ".join("-" * w for w in widths))
    return "\n".join(out)


def percentile(values: list[float], q: float) -> float:
    """Linear-interpolated percentile (q in 0..100) of a non-empty list."""
    ordered = sorted(values)
    if len(ordered) == 1:
        return ordered[0]
    pos = (len(ordered) - 1) * q / 100.0
    lo = int(pos)
    hi = min(lo + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (pos - lo)


def median(values: list[float]) -> float:
    return statistics.median(values)


def synchronize(device) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)


class Timer:
    """Wall time of a block, synchronising the device before and after."""

    def __init__(self, device):
        self.device = device
        self.seconds = 0.0

    def __enter__(self):
        synchronize(self.device)
        self._start = time.perf_counter()
        return self

    def __exit__(self, *exc):
        synchronize(self.device)
        self.seconds = time.perf_counter() - self._start
        return False


class PeakRSS:
    """Samples the memory of this process and its children (DataLoader workers) in a thread.

    Reports peak RSS (resident pages, counting shared memory-mapped pages in every process that touched
    them) and, with psutil, peak PSS (shared pages divided among the processes sharing them: the fair
    total). Without psutil only this process's peak RSS from `resource` is available.
    """

    def __init__(self, interval: float = 0.05):
        self.interval = interval
        self.peak_rss = 0
        self.peak_pss = 0
        self.baseline_rss = 0
        self.baseline_pss = 0
        self.method = "psutil"
        try:
            import psutil

            self._process = psutil.Process()
        except ImportError:
            self._process = None
            self.method = "resource (this process only)"
        self._stop = threading.Event()
        self._thread = None

    def _sample(self) -> tuple[int, int]:
        procs = [self._process]
        try:
            procs += self._process.children(recursive=True)
        except Exception:  # noqa: BLE001 - a worker exiting between calls
            pass
        rss = pss = 0
        for proc in procs:
            try:
                info = proc.memory_full_info()
                rss += info.rss
                pss += getattr(info, "pss", info.rss)
            except Exception:  # noqa: BLE001 - the process is gone
                continue
        return rss, pss

    def _run(self):
        while not self._stop.is_set():
            rss, pss = self._sample()
            self.peak_rss = max(self.peak_rss, rss)
            self.peak_pss = max(self.peak_pss, pss)
            self._stop.wait(self.interval)

    def __enter__(self):
        if self._process is not None:
            self.baseline_rss, self.baseline_pss = self._sample()
            self._thread = threading.Thread(target=self._run, daemon=True)
            self._thread.start()
        return self

    def __exit__(self, *exc):
        if self._thread is not None:
            self._stop.set()
            self._thread.join()
        else:
            import resource

            self.peak_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
            self.peak_pss = self.peak_rss
        return False

    def as_dict(self) -> dict:
        mib = 2**20
        return {
            "peak_rss_mib": round(self.peak_rss / mib, 1),
            "peak_pss_mib": round(self.peak_pss / mib, 1),
            "baseline_rss_mib": round(self.baseline_rss / mib, 1),
            "baseline_pss_mib": round(self.baseline_pss / mib, 1),
            "memory_method": self.method,
        }


def set_threads(threads: int | None) -> None:
    if threads:
        import torch

        torch.set_num_threads(threads)
