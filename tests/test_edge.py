"""The edge: routing of unserved services in their own protocol, request ids, /_stratus routes,
metrics, through real clients and raw HTTP."""

import json
import urllib.error
import urllib.request

import botocore.exceptions
import pytest


def http(stratus, method, path, body=None, headers=None):
    request = urllib.request.Request(stratus.url + path, data=body, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, response.headers, response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.headers, error.read()


@pytest.mark.parametrize(
    "service, call",
    [
        ("iam", lambda c: c.list_users()),  # query protocol
        ("swf", lambda c: c.list_domains(registrationStatus="REGISTERED")),  # JSON 1.0
        ("s3", lambda c: c.list_buckets()),  # REST-XML
        ("lambda", lambda c: c.list_functions()),  # REST-JSON
        ("ec2", lambda c: c.describe_instances()),  # EC2 query
        ("cloudwatch", lambda c: c.list_metrics()),  # RPC v2 CBOR
    ],
)
def test_unserved_services_answer_in_their_protocol(stratus, service, call):
    with pytest.raises(botocore.exceptions.ClientError) as raised:
        call(stratus.client(service))
    error = raised.value.response
    assert error["Error"]["Code"] == "NotImplemented", error
    assert f"'{service}'" in error["Error"]["Message"]
    assert error["ResponseMetadata"]["HTTPStatusCode"] == 501


def test_unserved_service_through_awscli(stratus):
    result = stratus.aws("iam", "list-users", check=False)
    assert result.returncode != 0
    assert "(NotImplemented)" in result.stderr and "'iam'" in result.stderr


def test_every_response_has_a_unique_request_id(stratus):
    ids = set()
    for method, path in [("GET", "/_stratus/health"), ("GET", "/metrics"), ("GET", "/"), ("GET", "/_stratus/nope"),
                         ("GET", "/?Action=GetCallerIdentity&Version=2011-06-15")]:
        _, headers, _ = http(stratus, method, path)
        ids.add(headers["x-amzn-RequestId"])
    assert len(ids) == 5


def test_health_reports_services_and_store(stratus):
    status, headers, body = http(stratus, "GET", "/_stratus/health")
    health = json.loads(body)
    assert status == 200 and headers["Content-Type"] == "application/json"
    assert health["status"] == "running"
    assert health["services"] == {
        "dynamodb": "running", "dynamodbstreams": "running", "sns": "running", "sqs": "running", "sts": "running"}
    assert health["store"]["backend"] == "redb"


def test_state_and_reset(stratus):
    status, _, body = http(stratus, "GET", "/_stratus/state")
    state = json.loads(body)
    assert status == 200
    assert state["store"]["keys"] == 0 and "sts" in state["services"]
    status, _, body = http(stratus, "POST", "/_stratus/reset")
    assert status == 200 and json.loads(body)["reset"] is True
    # Stratus's routes answer their own 404s in JSON, and only to the right method.
    status, _, body = http(stratus, "GET", "/_stratus/reset")
    assert status == 404 and "error" in json.loads(body)


def test_metrics_count_requests_per_service_and_operation(stratus):
    sts = stratus.client("sts")
    for _ in range(3):
        sts.get_caller_identity()
    status, headers, body = http(stratus, "GET", "/metrics")
    text = body.decode()
    assert status == 200 and headers["Content-Type"].startswith("application/openmetrics-text")
    assert 'stratus_requests_total{service="sts",operation="GetCallerIdentity",status="200"} 3' in text
    assert 'stratus_request_duration_seconds_count{service="sts",operation="GetCallerIdentity"} 3' in text
    # A signed GET /metrics is an AWS request (S3 ListObjects on bucket "metrics"), not Prometheus.
    signed = {"Authorization": "AWS4-HMAC-SHA256 Credential=AKID/20240101/us-east-1/s3/aws4_request, SignedHeaders=host, Signature=0"}
    status, _, body = http(stratus, "GET", "/metrics", headers=signed)
    assert status == 501 and b"<Code>NotImplemented</Code>" in body
