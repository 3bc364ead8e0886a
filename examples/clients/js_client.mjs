// Calling lossd from JavaScript (Node 18+ or a browser): fetch and JSON, a body sent
// gzip-compressed, and an API key from LOSSD_API_KEY when the server wants one.
//
//     node examples/clients/js_client.mjs [http://localhost:8080]

import { gzipSync } from "node:zlib";

const url = process.argv[2] ?? "http://localhost:8080";
// A server run with API keys wants one in every request: `Authorization: Bearer <key>`.
const key = process.env.LOSSD_API_KEY;
const auth = key ? { authorization: `Bearer ${key}` } : {};

// The body gzip-compressed (in a browser: `new CompressionStream("gzip")`).
const res = await fetch(`${url}/v1/losses/mse_loss`, {
  method: "POST",
  headers: { "content-type": "application/json", "content-encoding": "gzip", ...auth },
  body: gzipSync(
    JSON.stringify({
      input: [[0.5, 1.0], [2.0, -1.0]],
      target: [[0.0, 1.5], [2.0, 0.0]],
      grad: true,
    }),
  ),
});
const out = await res.json();
if (!res.ok) throw new Error(`${out.code}: ${out.detail}`);
console.log(`mse_loss = ${out.loss}; d/d input = ${JSON.stringify(out.grad.input)}`);

// Many losses in one round trip.
const batch = await fetch(`${url}/v1/batch`, {
  method: "POST",
  headers: { "content-type": "application/json", ...auth },
  body: JSON.stringify({
    jobs: [
      { loss: "l1_loss", input: [1, 2, 3], target: [1, 1, 1] },
      { loss: "huber_loss", input: [0.5, 3.0], target: [0, 0], delta: 1.0 },
    ],
  }),
}).then((r) => r.json());
console.log(batch.results.map((r) => (r.ok ? r.result.loss : r.error.code)));
