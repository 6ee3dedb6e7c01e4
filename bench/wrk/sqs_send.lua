-- SQS SendMessage. QUEUE_URL=... wrk -t2 -c16 -d5s -s sqs_send.lua http://127.0.0.1:4566
package.path = "bench/wrk/?.lua;" .. package.path
local sqs = require("sqs_common")
local request_text = wrk.format("POST", "/", sqs.headers("SendMessage"),
  '{"QueueUrl":"' .. sqs.queue_url .. '","MessageBody":"' .. sqs.body .. '"}')
function request() return request_text end
function done(summary) io.write(string.format("non-2xx %d\n", summary.errors.status)) end
