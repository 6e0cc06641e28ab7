"""Runs synth-ai 0.7's `PolicyOptimizationJob` once and prints its result as one JSON line.

Run by `tests/test_synth_sdk.py` with the Python of a separate venv holding synth-ai, so it
imports nothing of ours: `python driver.py CONFIG.json` where the file says `backend_url`,
`api_key`, `environment_key`, `mode` (`poll` or `stream`), and `toml` (a path) or `config`
(a dict).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from synth_ai.sdk.optimization.policy import PolicyOptimizationJob


def main(path: str) -> None:
    args = json.loads(Path(path).read_text())
    common = {"backend_url": args["backend_url"], "api_key": args["api_key"],
              "localapi_api_key": args["environment_key"], "algorithm": "mipro"}
    if "toml" in args:
        job = PolicyOptimizationJob.from_config(args["toml"], **common)
    else:
        job = PolicyOptimizationJob.from_dict(args["config"], **common)
    job_id = job.submit()
    if args["mode"] == "poll":
        result = job.poll_until_complete(timeout=120.0, interval=0.5, request_timeout=30.0)
    else:
        result = job.stream_until_complete(timeout=120.0, interval=0.5)
    status = getattr(result.status, "value", result.status)
    print(json.dumps({"job_id": job_id, "status": str(status), "best_score": result.best_score,
                      "best_prompt": result.best_prompt, "error": result.error}))


if __name__ == "__main__":
    main(sys.argv[1])
