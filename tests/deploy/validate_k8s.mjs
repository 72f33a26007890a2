// Validates rendered Kubernetes manifests offline: every object against the Kubernetes API schemas
// (the kubernetes-models npm package, JSON schemas generated from Kubernetes' OpenAPI spec), then
// the rules Tandem's deployment relies on (probes, drain-long grace periods, GPU requests, scaling
// prefill and decode independently), that every flag Tandem's containers are given is one its CLI
// defines (src/cli/*.cpp, read from the working directory, the repository root), and that every file a
// flag names lies on a read-only mount. With --secure (overlays/secure): every frontend and worker has
// the cluster key, the cluster certificates and etcd's TLS flags, each file from a Secret, and etcd
// speaks only TLS to clients with certificates.
// Usage: node validate_k8s.mjs <npm_dir> <rendered.yaml> [--gpu] [--secure]
import { createRequire } from 'node:module';
import { readFileSync, readdirSync, existsSync } from 'node:fs';
import { pathToFileURL } from 'node:url';
import path from 'node:path';

const [, , npmDir, file, ...flags] = process.argv;
const gpu = flags.includes('--gpu');
const secure = flags.includes('--secure');
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

// The flags Tandem's CLI defines: every quoted "--name" in src/cli/*.cpp.
const cliDir = path.join(process.cwd(), 'src', 'cli');
const tandemFlags = new Set();
for (const f of readdirSync(cliDir).filter((f) => f.endsWith('.cpp'))) {
  for (const m of readFileSync(path.join(cliDir, f), 'utf8').matchAll(/"(--[a-z0-9-]+)"/g)) tandemFlags.add(m[1]);
}
const flagOf = (arg) => arg.split('=')[0];
const valueOf = (arg) => arg.slice(arg.indexOf('=') + 1);
// The mount a path lies on, with its volume: { mount, volume } or undefined.
const mountOf = (pod, container, file) => {
  const mount = (container.volumeMounts ?? []).find((m) => file.startsWith(m.mountPath.replace(/\/?$/, '/')));
  return mount && { mount, volume: (pod.volumes ?? []).find((v) => v.name === mount.name) };
};
const workloads = [...(byKind.Deployment ?? []), ...(byKind.StatefulSet ?? [])];
for (const w of workloads) {
  const pod = w.spec.template.spec;
  for (const c of pod.containers) {
    const args = c.args ?? [];
    const tandem = (c.command ?? [])[0] === 'tandem';
    for (const arg of args.filter((a) => a.startsWith('--'))) {
      if (tandem && !tandemFlags.has(flagOf(arg))) problems.push(`${w.metadata.name}: ${flagOf(arg)} is not a flag of tandem`);
      // A file a flag names (keys, certificates, CAs, password files) comes from a read-only mount.
      if (/(-file|-cert|-key|-ca)$/.test(flagOf(arg)) && valueOf(arg).startsWith('/')) {
        const at = mountOf(pod, c, valueOf(arg));
        if (!at) problems.push(`${w.metadata.name}: ${arg} is on no volume mount`);
        else if (!at.mount.readOnly) problems.push(`${w.metadata.name}: ${arg} is on a writable mount`);
      }
    }
  }
}

if (secure) {
  const configMap = (byKind.ConfigMap ?? []).find((m) => m.metadata.name === 'tandem-cluster');
  const etcdUrl = configMap?.data?.TANDEM_ETCD ?? '';
  if (!etcdUrl.startsWith('etcds://')) problems.push(`ConfigMap/tandem-cluster: TANDEM_ETCD is '${etcdUrl}', not etcds://`);
  const required = ['--cluster-key-file', '--cluster-tls-cert', '--cluster-tls-key', '--cluster-tls-ca', '--etcd-ca',
    '--etcd-cert', '--etcd-key'];
  for (const name of ['tandem-frontend', 'tandem-prefill', 'tandem-decode']) {
    const d = deployments[name];
    if (!d) continue;
    const pod = d.spec.template.spec;
    const c = pod.containers[0];
    const args = c.args ?? [];
    if (args.includes('--insecure-cluster')) problems.push(`${name}: --insecure-cluster in the secure overlay`);
    if (!args.some((a) => a === '--registry=$(TANDEM_ETCD)')) problems.push(`${name}: --registry is not $(TANDEM_ETCD)`);
    for (const flag of required) {
      const arg = args.find((a) => flagOf(a) === flag);
      if (!arg) {
        problems.push(`${name}: ${flag} missing`);
        continue;
      }
      const at = mountOf(pod, c, valueOf(arg));
      if (at && !at.volume?.secret) problems.push(`${name}: ${arg} is not from a Secret`);
    }
  }
  const etcd = (byKind.StatefulSet ?? []).find((s) => s.metadata.name === 'tandem-etcd');
  if (etcd) {
    const pod = etcd.spec.template.spec;
    const c = pod.containers[0];
    const args = c.args ?? [];
    for (const flag of ['--cert-file', '--key-file', '--trusted-ca-file']) {
      const arg = args.find((a) => flagOf(a) === flag);
      if (!arg) problems.push(`tandem-etcd: ${flag} missing`);
      else if (!mountOf(pod, c, valueOf(arg))?.volume?.secret) problems.push(`tandem-etcd: ${arg} is not from a Secret`);
    }
    if (!args.includes('--client-cert-auth')) problems.push('tandem-etcd: --client-cert-auth missing');
    const listen = args.find((a) => flagOf(a) === '--listen-client-urls') ?? '';
    if (!valueOf(listen).split(',').every((u) => u.startsWith('https://'))) problems.push(`tandem-etcd: ${listen} is not https only`);
    // With client certificates required on the client port, a kubelet probe there would never pass.
    const probe = c.readinessProbe?.httpGet;
    if (probe && (probe.port === 'client' || probe.port === 2379)) problems.push('tandem-etcd: the readiness probe needs the client port');
  }
}

if (problems.length) {
  console.error(problems.join('\n'));
  process.exit(1);
}
console.log(`${file}: ${docs.length} objects valid`);
