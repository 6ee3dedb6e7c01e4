-- SQS ReceiveMessage of 10 with VisibilityTimeout 0, so the queue's depth stays put: the latency
-- of a receive at a given depth. Prints the responses that carried fewer than 10 messages (the
-- queue ran dry, and the run measured something else). QUEUE_URL=... wrk -t1 -c1 -d5s --latency -s sqs_receive.lua URL
package.path = "bench/wrk/?.lua;" .. package.path
local sqs = require("sqs_common")
local request_text = wrk.format("POST", "/", sqs.headers("ReceiveMessage"),
  '{"QueueUrl":"' .. sqs.queue_url .. '","MaxNumberOfMessages":10,"VisibilityTimeout":0}')
local threads = {}
short = 0

function setup(thread) table.insert(threads, thread) end
function request() return request_text end

function response(status, headers, body)
  local _, messages = body:gsub('"ReceiptHandle"', "")
  if messages < 10 then short = short + 1 end
end

done = sqs.done_counting(threads, "short")
