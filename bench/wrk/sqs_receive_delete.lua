-- SQS ReceiveMessage (10) then DeleteMessageBatch of what came back, on each connection.
-- Prints the messages deleted. QUEUE_URL=... wrk -t2 -c16 -d5s -s sqs_receive_delete.lua URL
package.path = "bench/wrk/?.lua;" .. package.path
local sqs = require("sqs_common")
local receive = wrk.format("POST", "/", sqs.headers("ReceiveMessage"),
  '{"QueueUrl":"' .. sqs.queue_url .. '","MaxNumberOfMessages":10}')
local delete_headers = sqs.headers("DeleteMessageBatch")
local threads = {}
local pending = {}
deleted = 0

function setup(thread) table.insert(threads, thread) end

function request()
  local body = table.remove(pending)
  if body then return wrk.format("POST", "/", delete_headers, body) end
  return receive
end

function response(status, headers, body)
  local entries = {}
  for handle in body:gmatch('"ReceiptHandle":"([^"]+)"') do
    entries[#entries + 1] = '{"Id":"e' .. #entries .. '","ReceiptHandle":"' .. handle .. '"}'
  end
  if #entries > 0 then
    deleted = deleted + #entries
    table.insert(pending, '{"QueueUrl":"' .. sqs.queue_url .. '","Entries":[' .. table.concat(entries, ",") .. ']}')
  end
end

done = sqs.done_counting(threads, "deleted")
