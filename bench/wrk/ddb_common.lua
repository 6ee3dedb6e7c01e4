-- Shared by the DynamoDB wrk scripts: JSON 1.0 protocol requests as boto3 sends them, on a table
-- with pk (S) hash and sk (S) range keys. TABLE names the table; PKS and SKS (default 100 each)
-- the preloaded key space pk0..pk{PKS-1} x sk0..sk{SKS-1}.
local M = {}
M.table = os.getenv("TABLE")
M.pks = tonumber(os.getenv("PKS") or "100")
M.sks = tonumber(os.getenv("SKS") or "100")
M.payload = "a value of about a hundred bytes, which is what a small item's attributes look like in practice."

function M.headers(operation)
  return {
    ["Content-Type"] = "application/x-amz-json-1.0",
    ["X-Amz-Target"] = "DynamoDB_20120810." .. operation,
    ["Authorization"] = "AWS4-HMAC-SHA256 Credential=test/20260101/us-east-1/dynamodb/aws4_request, SignedHeaders=host, Signature=0",
  }
end

-- An item of about 170 bytes as JSON.
function M.item(pk, sk)
  return '{"pk":{"S":"' .. pk .. '"},"sk":{"S":"' .. sk .. '"},"data":{"S":"' .. M.payload
    .. '"},"n":{"N":"' .. math.random(1, 1000000) .. '"}}'
end

function M.key(pk, sk)
  return '{"pk":{"S":"' .. pk .. '"},"sk":{"S":"' .. sk .. '"}}'
end

-- wrk gives each thread its own Lua state, all seeded alike: number the threads and seed each apart.
local next_id = 0
function M.setup(thread)
  next_id = next_id + 1
  thread:set("id", next_id)
end

function M.init()
  M.id = id or 0
  math.randomseed(os.time() * 1000 + M.id * 7919)
end

-- Requests that need no fresh values, made once per thread and picked at random.
function M.pool(size, make)
  local requests = {}
  for i = 1, size do requests[i] = make() end
  return function() return requests[math.random(1, size)] end
end

function M.random_pk() return "pk" .. math.random(0, M.pks - 1) end
function M.random_sk() return "sk" .. math.random(0, M.sks - 1) end

function M.done(summary) io.write(string.format("non-2xx %d\n", summary.errors.status)) end
return M
