"""The published OpenAPI document is the contract. A bounded schemathesis run (the
settings and the reasons for them are in ``schemathesis.toml`` beside this file) sends
every operation generated requests, valid and invalid, with a fixed seed, to the real
platform, with the admin key and device tokens supplied; every answer must be what the
document says (status, content type, headers, body schema), never a 5xx.

schemathesis runs as its own command, as a user would run it, against a platform this test
starts: its pytest plugin does not load under pytest 9.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from iiotsim.platform import Platform
from tests.integration.mqtt import provision

CONFIG = Path(__file__).with_name("schemathesis.toml")
# Response conformance and safety; positive_data_acceptance is left out on purpose:
# cross-field rules (a lifetime with allowInfiniteLifetime, fleet conditions, twin
# property names) are the domain's, and JSON Schema cannot say them.
CHECKS = (
    "not_a_server_error,status_code_conformance,content_type_conformance,"
    "response_headers_conformance,response_schema_conformance,allow_header_conformance,"
    "negative_data_rejection,missing_required_header,unsupported_method,ignored_auth,"
    "use_after_free,ensure_resource_availability"
)


# Two runs: the admin API learns ids from its own answers and revokes what it finds (the
# run's Provisioning Token, its device), so the device API is fuzzed on its own first.
GROUPS = (("--exclude-path-regex", "^/api/"), ("--include-path-regex", "^/api/"))


def _run(platform: Platform, env: dict[str, str], group: tuple[str, str], report: Path) -> str:
    command = [
        str(Path(sys.executable).with_name("schemathesis")),
        "--config-file",
        str(CONFIG),
        "run",
        f"{platform.http_url}/schema/openapi.json",
        "--checks",
        CHECKS,
        "--workers",
        "1",
        "--report-dir",
        str(report),
        *group,
    ]
    done = subprocess.run(
        command, env=env, capture_output=True, text=True, timeout=300, check=False
    )
    summary = done.stdout[done.stdout.find("SUMMARY") :] if "SUMMARY" in done.stdout else ""
    print(" ".join(group), summary)  # the figures (pytest -s shows them)
    assert done.returncode == 0, done.stdout[-6000:] + done.stderr[-2000:]
    return summary


@pytest.mark.timeout(600)  # grows with the document: 87 operations took ~110 s at load 8
def test_every_operation_answers_as_its_openapi_document_says(tmp_path: Path) -> None:
    with Platform(data_dir=tmp_path / "data") as platform:
        device = provision(platform, "fuzz-device")
        env = {
            **os.environ,
            "IIOT_FUZZ_ADMIN_KEY": platform.admin_key,
            "IIOT_FUZZ_PROVISIONING_TOKEN": device.pt,
            "IIOT_FUZZ_REGISTRATION_TOKEN": device.rt,
            "NO_COLOR": "1",
        }
        summaries = [_run(platform, env, group, tmp_path / "report") for group in GROUPS]
    selected = 0
    for summary in summaries:
        counts = re.search(r"Selected: (\d+)/(\d+)\s+Tested: (\d+)", summary)
        assert counts, summary
        assert counts.group(1) == counts.group(3), summary  # every selected one was tested
        selected += int(counts.group(1))
        total = int(counts.group(2))
    assert selected == total  # the two runs cover the whole document
