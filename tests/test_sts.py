"""STS GetCallerIdentity through awscli and boto3: the universal smoke test."""

import json


def test_awscli_get_caller_identity(stratus):
    identity = json.loads(stratus.aws("sts", "get-caller-identity").stdout)
    assert identity == {"UserId": "000000000000", "Account": "000000000000", "Arn": "arn:aws:iam::000000000000:root"}


def test_boto3_get_caller_identity(stratus):
    response = stratus.client("sts").get_caller_identity()
    assert response["Account"] == "000000000000"
    assert response["Arn"] == "arn:aws:iam::000000000000:root"
    assert len(response["ResponseMetadata"]["RequestId"]) == 36


def test_twelve_digit_access_key_is_the_account(stratus):
    identity = json.loads(stratus.aws("sts", "get-caller-identity", access_key="123456789012").stdout)
    assert identity["Account"] == "123456789012"
    other = stratus.client("sts", aws_access_key_id="210987654321").get_caller_identity()
    assert other["Account"] == "210987654321"


def test_default_account_flag_and_env(start_stratus):
    by_flag = start_stratus("flag", args=("--ephemeral", "--default-account", "123456789012"))
    assert by_flag.client("sts").get_caller_identity()["Account"] == "123456789012"
    by_env = start_stratus("env", args=("--ephemeral",), env={"STRATUS_DEFAULT_ACCOUNT": "111122223333"})
    assert by_env.client("sts").get_caller_identity()["Account"] == "111122223333"


def test_region_from_any_scope_is_accepted(stratus):
    for region in ["eu-west-1", "ap-southeast-2"]:
        assert stratus.client("sts", region_name=region).get_caller_identity()["Account"] == "000000000000"


def test_unknown_sts_action_is_invalid_action(stratus):
    import urllib.request
    import urllib.error
    request = urllib.request.Request(stratus.url + "/?Action=NoSuchThing&Version=2011-06-15")
    try:
        urllib.request.urlopen(request, timeout=10)
        raise AssertionError("expected an error")
    except urllib.error.HTTPError as error:
        body = error.read().decode()
        assert error.code == 400
        assert "<Code>InvalidAction</Code>" in body
        assert error.headers["x-amzn-RequestId"] in body
