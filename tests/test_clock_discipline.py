"""Real time is read only in clock modules (DESIGN.md, "Time")."""

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = [ROOT / "server" / "iiot_server", ROOT / "device" / "iiot_device", ROOT / "iiotsim"]
FORBIDDEN = re.compile(r"datetime\.(now|utcnow)\(|time\.time\(\)|date\.today\(\)")


def test_no_real_time_outside_clock_modules() -> None:
    offenders = []
    for package in PACKAGES:
        for path in package.rglob("*.py"):
            if path.name == "clock.py":
                continue
            for lineno, line in enumerate(path.read_text().splitlines(), 1):
                if FORBIDDEN.search(line):
                    offenders.append(f"{path.relative_to(ROOT)}:{lineno}: {line.strip()}")
    assert offenders == []
