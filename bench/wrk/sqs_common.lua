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
-- A wrk `done` that prints the non-2xx answers and the sum over threads of the global `counter`.
function M.done_counting(threads, counter)
  return function(summary)
    local total = 0
    for _, thread in ipairs(threads) do total = total + thread:get(counter) end
    io.write(string.format("non-2xx %d\n%s %d\n", summary.errors.status, counter, total))
  end
end

return M
