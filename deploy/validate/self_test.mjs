// Proves that the checks of run.sh can fail: copies the deployment files into a temporary tree,
// breaks one thing at a time, and expects validate.mjs (or check_dockerfile.py) to reject it.
// Usage: node self_test.mjs REPO_ROOT
import { spawnSync } from "node:child_process";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";

const root = path.resolve(process.argv[2] ?? "../..");
const here = path.dirname(fileURLToPath(import.meta.url));
const copyTree = (dest) => {
  fs.cpSync(path.join(root, "deploy"), path.join(dest, "deploy"), {
    recursive: true,
    filter: (p) => !p.includes("node_modules"),
  });
  fs.mkdirSync(path.join(dest, "server/metrics"), { recursive: true });
  fs.copyFileSync(path.join(root, "server/main.cc"), path.join(dest, "server/main.cc"));
  fs.copyFileSync(path.join(root, "server/metrics/metrics.cc"), path.join(dest, "server/metrics/metrics.cc"));
  fs.copyFileSync(path.join(root, "Dockerfile"), path.join(dest, "Dockerfile"));
  for (const f of ["tools/install-deps.sh"]) {
    fs.mkdirSync(path.dirname(path.join(dest, f)), { recursive: true });
    fs.copyFileSync(path.join(root, f), path.join(dest, f));
  }
};

// [what, file, from, to, checker]
const breakages = [
  ["container port not an integer", "deploy/k8s/base/deployment.yaml", "containerPort: 50051", 'containerPort: "fifty"', "k8s"],
  ["probe on the wrong port", "deploy/k8s/base/deployment.yaml", "          livenessProbe:\n            grpc:\n              port: 50051",
   "          livenessProbe:\n            grpc:\n              port: 50052", "k8s"],
  ["ServiceMonitor interval not a duration (CRD schema)", "deploy/k8s/base/servicemonitor.yaml", "interval: 15s", "interval: fifteen", "k8s"],
  ["ServiceMonitor port missing", "deploy/k8s/base/servicemonitor.yaml", "- port: metrics", "- port: prometheus", "k8s"],
  ["HPA metric without adapter rule", "deploy/k8s/base/hpa.yaml", "name: tp_queue_time_seconds_mean", "name: tp_queue_seconds", "k8s"],
  ["missing PVC", "deploy/k8s/base/deployment.yaml", "claimName: tpserve-models", "claimName: models", "k8s"],
  ["drain longer than the kubelet waits", "deploy/k8s/base/deployment.yaml", "terminationGracePeriodSeconds: 45", "terminationGracePeriodSeconds: 20", "k8s"],
  ["TLS patch on a missing path", "deploy/k8s/tls/deployment-tls.yaml", "path: /spec/template/spec/volumes/-", "path: /spec/template/spec/volumez/-", "k8s"],
  ["Compose duration", "deploy/compose/compose.yaml", "interval: 15s", "interval: soon", "k8s"],
  ["Compose unknown service key", "deploy/compose/compose.yaml", "    stop_grace_period: 40s", "    stop_grace: 40s", "k8s"],
  ["dashboard metric not exported", "deploy/compose/grafana/dashboards/tpserve.json", "tp_queue_depth", "tp_queue_length", "k8s"],
  ["Prometheus target not a service", "deploy/compose/prometheus/prometheus.yml", "tpserve:9090", "tpserver:9090", "k8s"],
  ["EXPOSE of a port the server does not use", "Dockerfile", "EXPOSE 50051 9090", "EXPOSE 50051 9464", "docker"],
  ["runtime stage as root", "Dockerfile", "USER 10001:10001", "USER root", "docker"],
  ["RUN step that does not parse", "Dockerfile", "&& ldconfig \\", "&& ldconfig && \\\n && true \\", "docker"],
];

let failures = 0;
for (const [what, file, from, to, checker] of breakages) {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "tpserve-deploy-selftest-"));
  try {
    copyTree(dir);
    const p = path.join(dir, file);
    const text = fs.readFileSync(p, "utf8");
    if (!text.includes(from)) {
      console.log(`FAIL  ${what}: '${from}' not found in ${file} (update this self test)`);
      failures++;
      continue;
    }
    fs.writeFileSync(p, text.split(from).join(to));
    const run =
      checker === "k8s"
        ? spawnSync("node", [path.join(here, "validate.mjs"), dir], {
            encoding: "utf8",
            env: { ...process.env, TPSERVE_VALIDATE_NO_KUBECTL: "1" },
          })
        : spawnSync("python3", [path.join(here, "check_dockerfile.py"), dir, "Dockerfile", "--main", "server/main.cc"], {
            encoding: "utf8",
          });
    const rejected = run.status !== 0;
    const reason = (run.stdout + run.stderr).split("\n").find((l) => l.startsWith("ERROR")) ?? "";
    console.log(`${rejected ? "ok  " : "FAIL"}  ${what}${rejected ? `: ${reason.slice(0, 110)}` : ": accepted"}`);
    failures += rejected ? 0 : 1;
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
}
console.log(`${breakages.length - failures} of ${breakages.length} broken files rejected`);
process.exit(failures ? 1 : 0);
