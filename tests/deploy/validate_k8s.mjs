// Validates rendered Kubernetes manifests offline: every object against the Kubernetes API schemas
// (the kubernetes-models npm package, JSON schemas generated from Kubernetes' OpenAPI spec), then
// the rules Tandem's deployment relies on (probes, drain-long grace periods, GPU requests, scaling
// prefill and decode independently).
// Usage: node validate_k8s.mjs <npm_dir> <rendered.yaml> [--gpu]
import { createRequire } from 'node:module';
import { readFileSync, existsSync } from 'node:fs';
import { pathToFileURL } from 'node:url';
import path from 'node:path';

const [, , npmDir, file, ...flags] = process.argv;
const gpu = flags.includes('--gpu');
const require = createRequire(path.join(npmDir, 'package.json'));
const YAML = require('yaml');
const models = path.join(npmDir, 'node_modules', 'kubernetes-models');

const problems = [];
const docs = YAML.parseAllDocuments(readFileSync(file, 'utf8')).map((d) => d.toJS()).filter((d) => d);
if (docs.length === 0) problems.push(`${file}: no objects`);
const byKind = {};
for (const obj of docs) {
  const name = `${obj.kind}/${obj.metadata?.name}`;
  (byKind[obj.kind] ??= []).push(obj);
  const [group, version] = obj.apiVersion.includes('/') ? obj.apiVersion.split('/') : ['', obj.apiVersion];
  const modulePath = path.join(models, group, version, `${obj.kind}.js`);
  if (!existsSync(modulePath)) {
    problems.push(`${name}: no schema for ${obj.apiVersion} ${obj.kind}`);
    continue;
  }
  const Model = (await import(pathToFileURL(modulePath)))[obj.kind];
  try {
    new Model(obj).validate();
  } catch (e) {
    problems.push(`${name}: ${e.message}`);
  }
}

const deployments = Object.fromEntries((byKind.Deployment ?? []).map((d) => [d.metadata.name, d]));
for (const name of ['tandem-frontend', 'tandem-prefill', 'tandem-decode']) {
  const d = deployments[name];
  if (!d) {
    problems.push(`Deployment/${name} is missing (prefill and decode must scale independently)`);
    continue;
  }
  const pod = d.spec.template.spec;
  for (const c of pod.containers) {
    if (!c.readinessProbe) problems.push(`${name}/${c.name}: no readinessProbe`);
    if (!c.livenessProbe) problems.push(`${name}/${c.name}: no livenessProbe`);
  }
  // SIGTERM drains for up to --drain-timeout-ms; Kubernetes must not kill the pod before that.
  const args = pod.containers[0].args ?? [];
  const drain = args.find((a) => a.startsWith('--drain-timeout-ms='));
  const drainSeconds = drain ? Number(drain.split('=')[1]) / 1000 : 30;
  if (!(pod.terminationGracePeriodSeconds > drainSeconds)) {
    problems.push(`${name}: terminationGracePeriodSeconds ${pod.terminationGracePeriodSeconds} is not above the ${drainSeconds} s drain`);
  }
  if (name !== 'tandem-frontend') {
    const gpus = pod.containers[0].resources?.limits?.['nvidia.com/gpu'];
    if (gpu && String(gpus) !== '1') problems.push(`${name}: one GPU per worker expected, limits say ${gpus}`);
    if (!gpu && gpus !== undefined) problems.push(`${name}: the CPU overlay requests GPUs`);
    if (!args.some((a) => a.startsWith('--registry=')) || !args.some((a) => a.startsWith('--prefill-queue='))) {
      problems.push(`${name}: a worker needs --registry and --prefill-queue`);
    }
  }
}
for (const name of ['tandem-etcd', 'tandem-nats']) {
  if (!(byKind.StatefulSet ?? []).some((s) => s.metadata.name === name)) problems.push(`StatefulSet/${name} is missing`);
}

if (problems.length) {
  console.error(problems.join('\n'));
  process.exit(1);
}
console.log(`${file}: ${docs.length} objects valid`);
