-- DynamoDB Query of one random partition (all its items: 100 when preloaded as pk x sk0..sk99).
-- TABLE=... PKS=100 wrk -t2 -c16 -d5s -s ddb_query.lua http://127.0.0.1:4566
package.path = "bench/wrk/?.lua;" .. package.path
local ddb = require("ddb_common")
local next_request
setup = ddb.setup
function init()
  ddb.init()
  local headers = ddb.headers("Query")
  next_request = ddb.pool(4096, function()
    return wrk.format("POST", "/", headers, '{"TableName":"' .. ddb.table .. '","KeyConditionExpression":"pk = :pk",'
      .. '"ExpressionAttributeValues":{":pk":{"S":"' .. ddb.random_pk() .. '"}}}')
  end)
end
function request() return next_request() end
done = ddb.done
