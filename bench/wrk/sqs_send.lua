-- SQS SendMessage over the JSON protocol, as boto3 sends it. Usage:
--   QUEUE_URL=http://127.0.0.1:4566/000000000000/bench wrk -t2 -c8 -d5s -s sqs_send.lua http://127.0.0.1:4566
local queue_url = os.getenv("QUEUE_URL")
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/x-amz-json-1.0"
wrk.headers["X-Amz-Target"] = "AmazonSQS.SendMessage"
wrk.headers["x-amzn-query-mode"] = "true"
wrk.headers["Authorization"] = "AWS4-HMAC-SHA256 Credential=test/20260101/us-east-1/sqs/aws4_request, SignedHeaders=host, Signature=0"
wrk.body = '{"QueueUrl":"' .. queue_url .. '","MessageBody":"hello from wrk, a message of about a hundred bytes, which is what small events look like."}'

function done(summary, latency, requests)
  io.write(string.format("non-2xx: %d\n", summary.errors.status))
end
