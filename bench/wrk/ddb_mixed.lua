-- 80% GetItem, 20% PutItem, both on random items of the preloaded pk0..pk99 x sk0..sk99 (the
-- puts overwrite, so the reads keep finding items and the table keeps its size).
-- TABLE=... wrk -t2 -c16 -d5s -s ddb_mixed.lua http://127.0.0.1:4566
package.path = "bench/wrk/?.lua;" .. package.path
local ddb = require("ddb_common")
local put_headers = ddb.headers("PutItem")
local next_get
setup = ddb.setup
function init()
  ddb.init()
  local headers = ddb.headers("GetItem")
  next_get = ddb.pool(4096, function()
    return wrk.format("POST", "/", headers, '{"TableName":"' .. ddb.table .. '","Key":' .. ddb.key(ddb.random_pk(), ddb.random_sk()) .. '}')
  end)
end
function request()
  if math.random() < 0.8 then return next_get() end
  return wrk.format("POST", "/", put_headers,
    '{"TableName":"' .. ddb.table .. '","Item":' .. ddb.item(ddb.random_pk(), ddb.random_sk()) .. '}')
end
done = ddb.done
