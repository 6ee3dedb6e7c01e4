-- SNS Publish over the query protocol, as boto3 sends it.
-- TOPIC_ARN=... wrk -t2 -c16 -d5s -s sns_publish.lua http://127.0.0.1:4566
local function encode(s)
  return (s:gsub("[^%w%-_%.~]", function(c) return string.format("%%%02X", string.byte(c)) end))
end
local body = "Action=Publish&Version=2010-03-31&TopicArn=" .. encode(os.getenv("TOPIC_ARN"))
  .. "&Message=" .. encode("hello from wrk, a message of about a hundred bytes, which is what small events look like.")
local request_text = wrk.format("POST", "/", {
  ["Content-Type"] = "application/x-www-form-urlencoded; charset=utf-8",
  ["Authorization"] = "AWS4-HMAC-SHA256 Credential=test/20260101/us-east-1/sns/aws4_request, SignedHeaders=host, Signature=0",
}, body)
function request() return request_text end
function done(summary) io.write(string.format("non-2xx %d\n", summary.errors.status)) end
