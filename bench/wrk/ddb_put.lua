-- DynamoDB PutItem of a new item each time (a random pk of 100, an sk unique to this thread).
-- TABLE=... wrk -t2 -c16 -d5s -s ddb_put.lua http://127.0.0.1:4566
package.path = "bench/wrk/?.lua;" .. package.path
local ddb = require("ddb_common")
local headers = ddb.headers("PutItem")
local count = 0
setup = ddb.setup
init = ddb.init
function request()
  count = count + 1
  return wrk.format("POST", "/", headers,
    '{"TableName":"' .. ddb.table .. '","Item":' .. ddb.item(ddb.random_pk(), "w" .. ddb.id .. "-" .. count) .. '}')
end
done = ddb.done
