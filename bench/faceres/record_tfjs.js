// Reference outputs of Human's faceres (HSE MobileNet age/gender) with TF.js, for bench/faceres/age_gender_sources.py.
//
//   python bench/faceres/age_gender_sources.py --write-inputs /tmp/faceres_inputs.npy
//   NODE_PATH=$JS/node_modules node bench/faceres/record_tfjs.js HUMAN_PACKAGE_DIR /tmp/faceres_inputs.npy
//
// @tensorflow/tfjs 4.22.0 (the version Human 3.3.6 bundles), pure-JS CPU backend, node 20 (as tests/fixtures/zoo).
// Input: the uint8 RGB 224x224 crops as float 0..255 (Human's faceres.ts enhance(): its [0, 1] face tensor x 255).
'use strict';
const fs = require('fs');
const path = require('path');
const crypto = require('crypto');
const tf = require('@tensorflow/tfjs');

function readNpy(file) {
  const buf = fs.readFileSync(file);
  const hlen = buf.readUInt16LE(8);
  const header = buf.slice(10, 10 + hlen).toString('latin1');
  if (!header.includes("'descr': '|u1'")) throw new Error(`${file}: need uint8`);
  const shape = header.match(/'shape': \(([^)]*)\)/)[1].split(',').filter((s) => s.trim()).map(Number);
  return { shape, data: new Uint8Array(buf.buffer, buf.byteOffset + 10 + hlen, shape.reduce((a, b) => a * b, 1)) };
}

(async () => {
  const [dir, inputs] = process.argv.slice(2);
  await tf.setBackend('cpu');
  await tf.ready();
  const json = JSON.parse(fs.readFileSync(path.join(dir, 'models', 'faceres.json')));
  const bin = fs.readFileSync(path.join(dir, 'models', 'faceres.bin'));
  const weightSpecs = [].concat(...json.weightsManifest.map((g) => g.weights));
  const model = await tf.loadGraphModel(tf.io.fromMemory({
    modelTopology: json.modelTopology, weightSpecs, weightData: bin.buffer.slice(bin.byteOffset, bin.byteOffset + bin.length), format: json.format,
  }));
  const inp = readNpy(inputs);
  const x = tf.tensor4d(Float32Array.from(inp.data), inp.shape, 'float32');
  const names = ['gender_pred/BiasAdd', 'age_pred/BiasAdd', 'gender_pred/Sigmoid', 'age_pred/Softmax'];
  const outs = model.execute(x, names);
  const rec = {
    runtime: `@tensorflow/tfjs ${tf.version.tfjs} (${tf.getBackend()} backend), tf.loadGraphModel + model.execute`,
    inputs_sha256: crypto.createHash('sha256').update(fs.readFileSync(inputs)).digest('hex'),
    outputs: names,
    command: 'NODE_PATH=$JS/node_modules node bench/faceres/record_tfjs.js HUMAN_PACKAGE_DIR INPUTS.npy',
  };
  for (let i = 0; i < names.length; i++) rec[names[i]] = await outs[i].array();
  fs.writeFileSync(path.join(__dirname, 'tfjs_reference.json'), JSON.stringify(rec) + '\n');
  console.log(rec['gender_pred/Sigmoid']);
})().catch((e) => { console.error(e); process.exit(1); });
