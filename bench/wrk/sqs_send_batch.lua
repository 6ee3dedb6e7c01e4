-- SQS SendMessageBatch of 10. QUEUE_URL=... wrk -t2 -c16 -d5s -s sqs_send_batch.lua http://127.0.0.1:4566
package.path = "bench/wrk/?.lua;" .. package.path
local sqs = require("sqs_common")
local entries = {}
for i = 1, 10 do entries[i] = '{"Id":"m' .. i .. '","MessageBody":"' .. sqs.body .. '"}' end
local request_text = wrk.format("POST", "/", sqs.headers("SendMessageBatch"),
  '{"QueueUrl":"' .. sqs.queue_url .. '","Entries":[' .. table.concat(entries, ",") .. ']}')
function request() return request_text end
function done(summary) io.write(string.format("non-2xx %d\n", summary.errors.status)) end
