-- wrk script: POST one OpenAI embeddings request (a short sentence) per call.
-- Usage: wrk -t2 -c8 -d10s --latency -s scripts/serve_load.lua http://127.0.0.1:8080/v1/embeddings
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.body = '{"model": "sentence-transformers/all-MiniLM-L6-v2", "input": "The quick brown fox jumps over the lazy dog near the river bank."}'

local errors = 0
response = function(status, headers, body)
  if status ~= 200 then errors = errors + 1 end
end
