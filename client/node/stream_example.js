#!/usr/bin/env node
// tpserve from Node.js with @grpc/grpc-js and @grpc/proto-loader (no generated code): create a
// model, stream x1/x2 batches through TensorProductService.Stream with a window of requests in
// flight, read the results in order, and check them.
//
//   node stream_example.js --server HOST:PORT [--token T] [--reference ref_mixed_parity.json]
//                          [--batches 24] [--batch 8] [--window 8] [--proto PATH]
//
// With --reference (an e3nn reference case from ../shared/reference), the model gets e3nn's
// weights and the stream carries e3nn's x1/x2 one sample per request: each result must match
// e3nn's `out`. Every stream also sends random batches whose results must match unary Forward.
// Exit code 0 when every check passed, 1 otherwise.
'use strict';

const fs = require('fs');
const path = require('path');
const grpc = require('@grpc/grpc-js');
const protoLoader = require('@grpc/proto-loader');

function parseArgs(argv) {
  const args = { batches: 24, batch: 8, window: 8, token: process.env.TPSERVE_TOKEN || '' };
  for (let i = 2; i < argv.length; i += 2) {
    const key = argv[i].replace(/^--/, '');
    if (!['server', 'token', 'reference', 'batches', 'batch', 'window', 'proto'].includes(key) || i + 1 >= argv.length) {
      throw new Error(`unknown or incomplete flag ${argv[i]}; see the usage at the top of ${path.basename(__filename)}`);
    }
    args[key] = ['batches', 'batch', 'window'].includes(key) ? Number(argv[i + 1]) : argv[i + 1];
  }
  if (!args.server) throw new Error('--server HOST:PORT is required');
  args.proto = args.proto || process.env.TPSERVE_PROTO ||
      path.join(__dirname, '..', '..', 'proto', 'tp', 'v1', 'tensor_product.proto');
  return args;
}

function loadServices(protoPath) {
  const definition = protoLoader.loadSync(protoPath, {
    keepCase: true,   // field names as in the .proto (irreps_in1, weight_numel)
    longs: Number,    // int64/uint64 as JS numbers (shapes, versions; checksums lose precision)
    enums: String,    // 'DTYPE_FLOAT32'
    defaults: true,
    oneofs: true,     // response.result names the oneof member that is set
  });
  return grpc.loadPackageDefinition(definition).tp.v1;
}

// ---- tensors: Float32Array <-> tp.v1.Tensor (shape + dtype + little-endian C-order bytes) ----

function toTensor(values, rows, cols) {
  if (values.length !== rows * cols) throw new Error(`tensor of ${values.length} values is not [${rows}, ${cols}]`);
  return { shape: [rows, cols], dtype: 'DTYPE_FLOAT32', data: Buffer.from(values.buffer, values.byteOffset, values.byteLength) };
}

function fromTensor(tensor, what) {
  if (tensor.dtype !== 'DTYPE_FLOAT32') throw new Error(`${what}: expected float32, got ${tensor.dtype}`);
  const count = tensor.shape.reduce((a, b) => a * b, 1);
  if (tensor.data.length !== 4 * count) throw new Error(`${what}: ${tensor.data.length} bytes for shape [${tensor.shape}]`);
  const copy = new Float32Array(count);  // the Buffer may not be 4-byte aligned
  Buffer.from(copy.buffer).set(tensor.data);
  return copy;
}

function relativeError(got, want) {
  let diff = 0;
  let norm = 0;
  for (let i = 0; i < want.length; i++) {
    diff += (got[i] - want[i]) ** 2;
    norm += want[i] ** 2;
  }
  return Math.sqrt(diff) / Math.max(Math.sqrt(norm), 1e-300);
}

function randomValues(count, seed) {
  // A small LCG: reproducible without dependencies; values in [-1, 1).
  let state = seed >>> 0;
  const values = new Float32Array(count);
  for (let i = 0; i < count; i++) {
    state = (Math.imul(state, 1664525) + 1013904223) >>> 0;
    values[i] = state / 2 ** 31 - 1;
  }
  return values;
}

// ---- calls ----

function metadataFor(token) {
  const metadata = new grpc.Metadata();
  if (token) metadata.set('authorization', `Bearer ${token}`);
  return metadata;
}

function deadline(seconds) {
  return new Date(Date.now() + seconds * 1000);
}

function describe(error) {
  return `${grpc.status[error.code] || error.code}: ${error.details || error.message}`;
}

// CreateModel is a client stream: the header, then the weights in chunks (when given).
function createModel(models, metadata, name, spec, weights) {
  return new Promise((resolve, reject) => {
    const call = models.CreateModel(metadata, { deadline: deadline(30) }, (error, info) => {
      if (error) reject(new Error(`CreateModel: ${describe(error)}`));
      else resolve(info);
    });
    call.write({ header: weights ? { name, spec, upload: true } : { name, spec, seed: 1 } });
    const chunkElements = 65536;
    for (let offset = 0; weights && offset < weights.length; offset += chunkElements) {
      const piece = weights.subarray(offset, offset + chunkElements);
      call.write({ chunk: { offset, dtype: 'DTYPE_FLOAT32', data: Buffer.from(piece.buffer, piece.byteOffset, piece.byteLength) } });
    }
    call.end();
  });
}

function forward(compute, metadata, request) {
  return new Promise((resolve, reject) => {
    compute.Forward(request, metadata, { deadline: deadline(30) }, (error, response) => {
      if (error) reject(new Error(`Forward: ${describe(error)}`));
      else resolve(response);
    });
  });
}

// Sends `requests` (ForwardRequest messages) over one Stream call with at most `window`
// unanswered, and resolves with the responses in request order (the server answers in order;
// request_id checks it).
function streamForward(compute, metadata, requests, window) {
  return new Promise((resolve, reject) => {
    const call = compute.Stream(metadata, { deadline: deadline(120) });
    const results = [];
    let sent = 0;
    let inFlight = 0;
    const sendMore = () => {
      while (inFlight < window && sent < requests.length) {
        call.write({ request_id: sent, forward: requests[sent] });
        sent++;
        inFlight++;
      }
      if (sent === requests.length) call.end();
    };
    call.on('data', (response) => {
      inFlight--;
      if (response.request_id !== results.length) {
        call.cancel();
        reject(new Error(`Stream: response ${response.request_id} where ${results.length} was next`));
        return;
      }
      if (response.code !== 0) {
        call.cancel();
        reject(new Error(`Stream request ${response.request_id}: ${grpc.status[response.code]}: ${response.message}`));
        return;
      }
      results.push(response.forward);
      if (sent < requests.length) sendMore();
    });
    call.on('error', (error) => reject(new Error(`Stream: ${describe(error)}`)));
    call.on('end', () => {
      if (results.length === requests.length) resolve(results);
      else reject(new Error(`Stream ended after ${results.length} of ${requests.length} responses`));
    });
    sendMore();
  });
}

async function main() {
  const args = parseArgs(process.argv);
  const tp = loadServices(args.proto);
  const options = { 'grpc.max_receive_message_length': 64 << 20, 'grpc.max_send_message_length': 64 << 20 };
  const credentials = grpc.credentials.createInsecure();
  const models = new tp.ModelService(args.server, credentials, options);
  const compute = new tp.TensorProductService(args.server, credentials, options);
  const metadata = metadataFor(args.token);
  const name = `node-example-${process.pid}`;
  let failures = 0;

  // The model: e3nn's weights and irreps from a reference case, or a small seeded one.
  const reference = args.reference ? JSON.parse(fs.readFileSync(args.reference, 'utf8')) : null;
  const spec = reference
    ? { irreps_in1: reference.irreps_in1, irreps_in2: reference.irreps_in2, irreps_out: reference.irreps_out }
    : { irreps_in1: '8x0e + 4x1o', irreps_in2: '4x0e + 2x1o', irreps_out: '8x0e + 4x1o + 2x2e' };
  const info = await createModel(models, metadata, name, spec, reference ? Float32Array.from(reference.weight) : null);
  console.log(`created ${info.name}: ${info.spec.irreps_in1} x ${info.spec.irreps_in2} -> ${info.spec.irreps_out}, ` +
              `${info.weight_numel} weights, dims ${info.dim_in1}/${info.dim_in2}/${info.dim_out}`);

  // Requests: the reference samples one per request, then random batches.
  const requests = [];
  const expected = [];  // e3nn's out for reference requests, null for random ones
  if (reference) {
    reference.x1.forEach((row, i) => {
      requests.push({ model: name, x1: toTensor(Float32Array.from(row), 1, info.dim_in1),
                      x2: toTensor(Float32Array.from(reference.x2[i]), 1, info.dim_in2) });
      expected.push(Float32Array.from(reference.out[i]));
    });
  }
  for (let b = 0; b < args.batches; b++) {
    const rows = 1 + (b % args.batch);  // batch sizes differ, so an answer out of order cannot match
    requests.push({ model: name, x1: toTensor(randomValues(rows * info.dim_in1, 2 * b + 1), rows, info.dim_in1),
                    x2: toTensor(randomValues(rows * info.dim_in2, 2 * b + 2), rows, info.dim_in2) });
    expected.push(null);
  }

  const started = process.hrtime.bigint();
  const responses = await streamForward(compute, metadata, requests, args.window);
  const elapsedMs = Number(process.hrtime.bigint() - started) / 1e6;
  console.log(`streamed ${requests.length} requests (window ${args.window}) in ${elapsedMs.toFixed(1)} ms`);

  let worstReference = 0;
  let worstForward = 0;
  for (let i = 0; i < requests.length; i++) {
    const out = fromTensor(responses[i].out, `response ${i}`);
    const rows = requests[i].x1.shape[0];
    if (out.length !== rows * info.dim_out) {
      console.error(`request ${i}: ${out.length} values; expected [${rows}, ${info.dim_out}]`);
      failures++;
      continue;
    }
    if (expected[i]) {
      worstReference = Math.max(worstReference, relativeError(out, expected[i]));
    } else {
      const unary = fromTensor((await forward(compute, metadata, requests[i])).out, `Forward ${i}`);
      worstForward = Math.max(worstForward, relativeError(out, unary));
    }
  }
  if (reference) {
    console.log(`e3nn reference: worst relative error ${worstReference.toExponential(2)} (limit 1e-5)`);
    if (!(worstReference < 1e-5)) failures++;
  }
  console.log(`Stream vs unary Forward: worst relative error ${worstForward.toExponential(2)} (limit 1e-6)`);
  if (!(worstForward < 1e-6)) failures++;

  await new Promise((resolve, reject) => models.DeleteModel({ name }, metadata, { deadline: deadline(30) },
    (error) => (error ? reject(new Error(`DeleteModel: ${describe(error)}`)) : resolve())));
  models.close();
  compute.close();
  console.log(failures === 0 ? 'OK' : `FAILED (${failures} checks)`);
  return failures === 0 ? 0 : 1;
}

main().then((code) => { process.exitCode = code; }, (error) => {
  console.error(`stream_example: ${error.message}`);
  process.exitCode = 1;
});
