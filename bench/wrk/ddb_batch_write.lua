-- DynamoDB BatchWriteItem of 25 new items (random pks of 100, sks unique to this thread).
-- TABLE=... wrk -t2 -c16 -d5s -s ddb_batch_write.lua http://127.0.0.1:4566
package.path = "bench/wrk/?.lua;" .. package.path
local ddb = require("ddb_common")
local headers = ddb.headers("BatchWriteItem")
local count = 0
setup = ddb.setup
init = ddb.init
function request()
  local puts = {}
  for i = 1, 25 do
    count = count + 1
    puts[i] = '{"PutRequest":{"Item":' .. ddb.item(ddb.random_pk(), "b" .. ddb.id .. "-" .. count) .. '}}'
  end
  return wrk.format("POST", "/", headers, '{"RequestItems":{"' .. ddb.table .. '":[' .. table.concat(puts, ",") .. ']}}')
end
done = ddb.done
