-- DynamoDB GetItem of a random preloaded item (pk0..pk99 x sk0..sk99).
-- TABLE=... wrk -t2 -c16 -d5s -s ddb_get.lua http://127.0.0.1:4566
package.path = "bench/wrk/?.lua;" .. package.path
local ddb = require("ddb_common")
local next_request
setup = ddb.setup
function init()
  ddb.init()
  local headers = ddb.headers("GetItem")
  next_request = ddb.pool(4096, function()
    return wrk.format("POST", "/", headers, '{"TableName":"' .. ddb.table .. '","Key":' .. ddb.key(ddb.random_pk(), ddb.random_sk()) .. '}')
  end)
end
function request() return next_request() end
done = ddb.done
