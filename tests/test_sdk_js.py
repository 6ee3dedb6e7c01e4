"""SQS, SNS and DynamoDB through the AWS SDK for JavaScript v3 (the scenario scripts in
tests/sdk-js/), which test.sh installs from the npm registry, pinned by
tests/sdk-js/package-lock.json, and names in NODE_PATH."""

import os
import pathlib
import subprocess

import pytest

SCRIPTS = pathlib.Path(__file__).resolve().parent / "sdk-js"
SCENARIOS = {
    "sqs": ["standard", "fifo", "errors", "long-polling", "dead-letter"],
    "sns": ["fan-out", "fifo", "errors"],
    "dynamodb": ["items", "validation"],
}


@pytest.mark.parametrize("script,scenario", [(script, each) for script, names in SCENARIOS.items() for each in names])
@pytest.mark.parametrize("store", ["durable", "ephemeral"])
def test_the_javascript_sdk(start_stratus, store, script, scenario):
    assert os.environ.get("NODE_PATH"), "NODE_PATH must name the JavaScript SDK's node_modules: run ./test.sh"
    stratus = start_stratus(args=("--ephemeral",)) if store == "ephemeral" else start_stratus()
    # --no-warnings: the SDK warns on every start that its 2027 releases will need Node.js 22.
    result = subprocess.run(
        ["node", "--no-warnings", str(SCRIPTS / f"{script}.cjs"), stratus.url, scenario],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.strip() == f"{scenario}: ok"
