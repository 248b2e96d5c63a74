"""bench/cc_switch.py still runs and prints its figures as JSON (tiny sizes; the figures are not judged here)."""

from __future__ import annotations

import json
import subprocess
import sys

from tests.conftest import REPO_ROOT, ccgpu_env


def test_cc_switch_benchmark_prints_switch_times_and_api_writes_as_json():
    result = subprocess.run(  # noqa: S603 - fixed argv: this interpreter and a file of this checkout
        [sys.executable, str(REPO_ROOT / "bench/cc_switch.py"), "--reset-ms", "20", "--gpus", "2"],
        env=ccgpu_env(), capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 0, result.stderr
    figures = json.loads(result.stdout)
    assert figures["gpus"] == 2 and figures["emulated_reset_ms"] == 20
    assert 0 < figures["one_reset_s"] and 0 < figures["parallel_switch_s"] and 0 < figures["sequential_switch_s"]
    # intent+pause, phase, restore+state: three node patches and one Event per switch
    assert figures["api_requests_per_switch"]["nodes"]["patch"] == 3
    assert figures["api_writes_per_switch"] == 4
