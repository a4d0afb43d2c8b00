// tpserve through the Open Inference Protocol from Node: @grpc/grpc-js with @grpc/proto-loader
// reading proto/inference/grpc_service.proto at run time (a client that is not ours). A live
// tpserve (CPU backend) answers; results are checked against e3nn's own numbers.
//
//   node kserve_client_test.js TPSERVE_BINARY SOURCE_DIR REFERENCE_DIR
'use strict';
const assert = require('assert');
const { spawn } = require('child_process');
const fs = require('fs');
const os = require('os');
const path = require('path');
const grpc = require('@grpc/grpc-js');
const protoLoader = require('@grpc/proto-loader');

const [tpserve, sourceDir, referenceDir] = process.argv.slice(2);
const TOKEN = 'kserve-node-token';

function load(proto) {
  const definition = protoLoader.loadSync(proto, {
    includeDirs: [path.join(sourceDir, 'proto')], keepCase: true, longs: Number, enums: String, defaults: true,
    oneofs: true,
  });
  return grpc.loadPackageDefinition(definition);
}

function startServer(modelDir) {
  return new Promise((resolve, reject) => {
    const child = spawn(tpserve, ['--listen=127.0.0.1:0', '--metrics_address=', '--backend=cpu',
      `--model_dir=${modelDir}`, `--auth_token=${TOKEN}`, '--shutdown_grace_seconds=1']);
    let output = '';
    child.stdout.on('data', (data) => {
      output += data;
      const match = /serving on port (\d+)/.exec(output);
      if (match) resolve({ child, port: Number(match[1]) });
    });
    child.stderr.on('data', (data) => { output += data; });
    child.on('exit', (code) => reject(new Error(`tpserve exited (${code}) before serving:\n${output}`)));
  });
}

function call(client, method, request, withToken = true) {
  const metadata = new grpc.Metadata();
  if (withToken) metadata.add('authorization', `Bearer ${TOKEN}`);
  return new Promise((resolve, reject) => {
    client[method](request, metadata, { deadline: Date.now() + 30000 }, (error, response) =>
      (error ? reject(error) : resolve(response)));
  });
}

const f32 = (values) => Buffer.from(new Float32Array(values.flat()).buffer);
const fromF32 = (buffer) => Array.from(new Float32Array(buffer.buffer.slice(buffer.byteOffset,
  buffer.byteOffset + buffer.length)));

function assertClose(got, want, tolerance, what) {
  const flat = want.flat();
  assert.strictEqual(got.length, flat.length, `${what}: ${got.length} values, expected ${flat.length}`);
  const scale = Math.max(...flat.map(Math.abs), 1e-30);
  const error = Math.max(...got.map((g, i) => Math.abs(g - flat[i]))) / scale;
  assert.ok(error < tolerance, `${what}: max relative error ${error}`);
}

async function main() {
  const ref = JSON.parse(fs.readFileSync(path.join(referenceDir, 'ref_mixed_parity.json')));
  const modelDir = fs.mkdtempSync(path.join(os.tmpdir(), 'tpserve-node-'));
  const { child, port } = await startServer(modelDir);
  const target = `127.0.0.1:${port}`;
  const inference = load('inference/grpc_service.proto').inference;
  const tp = load('tp/v1/tensor_product.proto').tp.v1;
  const client = new inference.GRPCInferenceService(target, grpc.credentials.createInsecure());
  let failures = 0;
  const test = async (name, body) => {
    try {
      await body();
      console.log(`ok   ${name}`);
    } catch (error) {
      failures += 1;
      console.log(`FAIL ${name}: ${error.stack || error}`);
    }
  };
  try {
    // The model with e3nn's weights, created through tp.v1's client stream.
    const models = new tp.ModelService(target, grpc.credentials.createInsecure());
    await new Promise((resolve, reject) => {
      const metadata = new grpc.Metadata();
      metadata.add('authorization', `Bearer ${TOKEN}`);
      const stream = models.CreateModel(metadata, (error, info) => (error ? reject(error) : resolve(info)));
      stream.write({ header: { name: 'ref', spec: { irreps_in1: ref.irreps_in1, irreps_in2: ref.irreps_in2,
        irreps_out: ref.irreps_out }, upload: true } });
      stream.write({ chunk: { offset: 0, dtype: 'DTYPE_FLOAT32', data: f32(ref.weight) } });
      stream.end();
    });
    const batch = ref.x1.length;
    const input = (name, values, raw) => ({ name, datatype: 'FP32', shape: [values.length, values[0].length],
      contents: raw ? undefined : { fp32_contents: values.flat() } });

    await test('ServerLive and ModelMetadata', async () => {
      assert.strictEqual((await call(client, 'ServerLive', {}, false)).live, true);
      const metadata = await call(client, 'ModelMetadata', { name: 'ref' });
      assert.deepStrictEqual(metadata.inputs.map((t) => [t.name, t.shape]),
        [['x1', [-1, ref.x1[0].length]], ['x2', [-1, ref.x2[0].length]]]);
      assert.deepStrictEqual(metadata.outputs.map((t) => t.name), ['out']);
    });

    await test('ModelInfer raw FP32 matches e3nn, id echoed', async () => {
      const response = await call(client, 'ModelInfer', { model_name: 'ref', id: 'node-7',
        inputs: [input('x1', ref.x1, true), input('x2', ref.x2, true)], raw_input_contents: [f32(ref.x1), f32(ref.x2)] });
      assert.strictEqual(response.id, 'node-7');
      assert.deepStrictEqual(response.outputs[0].shape, [batch, ref.out[0].length]);
      assertClose(fromF32(response.raw_output_contents[0]), ref.out, 1e-5, 'out');
    });

    await test('ModelInfer typed contents matches e3nn', async () => {
      const response = await call(client, 'ModelInfer', { model_name: 'ref',
        inputs: [input('x1', ref.x1, false), input('x2', ref.x2, false)] });
      assert.strictEqual(response.raw_output_contents.length, 0);
      assertClose(response.outputs[0].contents.fp32_contents, ref.out, 1e-5, 'out');
    });

    await test('ModelInfer with grad_out returns the requested gradients', async () => {
      const response = await call(client, 'ModelInfer', { model_name: 'ref',
        inputs: [input('x1', ref.x1, false), input('x2', ref.x2, false), input('grad_out', ref.grad_out, false)],
        outputs: [{ name: 'grad_x2' }, { name: 'grad_x1' }] });
      assert.deepStrictEqual(response.outputs.map((t) => t.name), ['grad_x2', 'grad_x1']);
      assertClose(response.outputs[0].contents.fp32_contents, ref.grad_x2, 1e-5, 'grad_x2');
      assertClose(response.outputs[1].contents.fp32_contents, ref.grad_x1, 1e-5, 'grad_x1');
    });

    await test('errors: INVALID_ARGUMENT, NOT_FOUND, UNAUTHENTICATED', async () => {
      const good = { model_name: 'ref', inputs: [input('x1', ref.x1, false), input('x2', ref.x2, false)] };
      await assert.rejects(call(client, 'ModelInfer', { ...good, inputs: [good.inputs[0]] }),
        (e) => e.code === grpc.status.INVALID_ARGUMENT && /x2/.test(e.details));
      await assert.rejects(call(client, 'ModelInfer', { ...good, model_name: 'nope' }),
        (e) => e.code === grpc.status.NOT_FOUND);
      await assert.rejects(call(client, 'ModelInfer', good, false), (e) => e.code === grpc.status.UNAUTHENTICATED);
    });
  } finally {
    client.close();
    child.kill('SIGTERM');
    await new Promise((resolve) => child.on('exit', resolve));
    fs.rmSync(modelDir, { recursive: true, force: true });
  }
  if (failures > 0) {
    console.log(`${failures} failed`);
    process.exit(1);
  }
  console.log('all passed');
}

main().catch((error) => {
  console.error(error);
  process.exit(1);
});
