// Calling lossd from JavaScript (Node 18+ or a browser): fetch and JSON.
//
//     node examples/clients/js_client.mjs [http://localhost:8080]

const url = process.argv[2] ?? "http://localhost:8080";

const res = await fetch(`${url}/v1/losses/mse_loss`, {
  method: "POST",
  headers: { "content-type": "application/json" },
  body: JSON.stringify({
    input: [[0.5, 1.0], [2.0, -1.0]],
    target: [[0.0, 1.5], [2.0, 0.0]],
    grad: true,
  }),
});
const out = await res.json();
if (!res.ok) throw new Error(`${out.code}: ${out.detail}`);
console.log(`mse_loss = ${out.loss}; d/d input = ${JSON.stringify(out.grad.input)}`);

// Many losses in one round trip.
const batch = await fetch(`${url}/v1/batch`, {
  method: "POST",
  headers: { "content-type": "application/json" },
  body: JSON.stringify({
    jobs: [
      { loss: "l1_loss", input: [1, 2, 3], target: [1, 1, 1] },
      { loss: "huber_loss", input: [0.5, 3.0], target: [0, 0], delta: 1.0 },
    ],
  }),
}).then((r) => r.json());
console.log(batch.results.map((r) => (r.ok ? r.result.loss : r.error.code)));
