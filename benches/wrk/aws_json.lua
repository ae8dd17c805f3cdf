-- wrk script of benches/performance.rs: POSTs AWS JSON 1.0 requests whose bodies come from a
-- file, one JSON document a line. The headers (X-Amz-Target, Content-Type, Authorization) are
-- given to wrk with -H.
--
--   wrk -t2 -c64 -d5s --latency -H ... -s aws_json.lua URL -- BODIES_FILE THREADS
--
-- Thread i (from 0) of THREADS sends lines i+1, i+1+THREADS, i+1+2*THREADS, ... of the file, so
-- no two threads send the same body. A thread that has sent all its lines starts over from its
-- first one: done() reports how many requests were sent and how many of them were distinct, so
-- the bench can say when bodies repeated (for ReleasePhoneNumber, a repeat is a refusal).
--
-- done() prints one line, `wrk-result {...}` (JSON), that the bench parses.

wrk.method = "POST"

local threads = {}

function setup(thread)
   thread:set("index", #threads)
   table.insert(threads, thread)
end

function init(args)
   local path, count = args[1], tonumber(args[2])
   bodies = {}
   local line_no = 0
   for line in io.lines(path) do
      if line_no % count == index then
         bodies[#bodies + 1] = line
      end
      line_no = line_no + 1
   end
   assert(#bodies > 0, "thread " .. index .. " has no body in " .. path)
   lines = #bodies
   -- Every request is this head, the body's length, a blank line and the body: one
   -- concatenation per request keeps the client light (wrk.format formats every header anew).
   local head = { wrk.method .. " " .. wrk.path .. " HTTP/1.1" }
   for name, value in pairs(wrk.headers) do
      head[#head + 1] = name .. ": " .. value
   end
   head[#head + 1] = "Content-Length: "
   prefix = table.concat(head, "\r\n")
   sent, cursor = 0, 1
end

function request()
   local body = bodies[cursor]
   sent = sent + 1
   cursor = cursor % lines + 1
   return prefix .. #body .. "\r\n\r\n" .. body
end

function done(summary, latency, requests)
   local sent, distinct = 0, 0
   for _, thread in ipairs(threads) do
      local n = thread:get("sent")
      sent = sent + n
      distinct = distinct + math.min(n, thread:get("lines"))
   end
   local e = summary.errors
   io.write(string.format(
      'wrk-result {"requests":%d,"duration_us":%d,"non_2xx":%d,"socket_errors":%d,' ..
         '"p50_us":%d,"p99_us":%d,"sent":%d,"distinct":%d}\n',
      summary.requests, summary.duration, e.status, e.connect + e.read + e.write + e.timeout,
      latency:percentile(50), latency:percentile(99), sent, distinct))
end
