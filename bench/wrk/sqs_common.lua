-- Shared by the SQS wrk scripts: JSON-protocol requests as boto3 sends them.
local M = {}
M.queue_url = os.getenv("QUEUE_URL")

function M.headers(operation)
  return {
    ["Content-Type"] = "application/x-amz-json-1.0",
    ["X-Amz-Target"] = "AmazonSQS." .. operation,
    ["x-amzn-query-mode"] = "true",
    ["Authorization"] = "AWS4-HMAC-SHA256 Credential=test/20260101/us-east-1/sqs/aws4_request, SignedHeaders=host, Signature=0",
  }
end

M.body = "hello from wrk, a message of about a hundred bytes, which is what small events look like."
return M
