"""How long df.testing.certify takes: 100 schedules of a 5-activity workflow (prints JSON).

python -m bench.certify_bench
"""

from __future__ import annotations

import json
import statistics
from datetime import timedelta

import durablefuture as df
from durablefuture.testing import certify


def step(name: str, n: int) -> str:
    return f"{name}-{n}"


OPTS = df.ActivityOptions(
    start_to_close_timeout=timedelta(seconds=10),
    retry_policy=df.RetryPolicy(initial_interval=1, maximum_attempts=3),
)


def five_activities(name: str):  # type: ignore[no-untyped-def]
    out = []
    for n in range(5):
        out.append((yield df.activity(step, name, n, options=OPTS)))
    return out


def main() -> None:
    times = []
    for seed in range(5):
        certificate = certify(five_activities, "o", activities=[step], examples=100, seed=seed)
        times.append(certificate.seconds)
    print(
        json.dumps(
            {
                "workload": "certify: 100 schedules of a 5-activity workflow",
                "rounds": len(times),
                "seconds_min": round(min(times), 3),
                "seconds_median": round(statistics.median(times), 3),
                "seconds_max": round(max(times), 3),
            }
        )
    )


if __name__ == "__main__":
    main()
