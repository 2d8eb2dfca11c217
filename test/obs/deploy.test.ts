// deploy/ holds what users run: it must agree with the code. Every metric the alert rules and the
// Grafana dashboard use exists in the metric catalog (docs/MONITORING.md, itself checked against
// src/ by test/docs.test.ts); every CFN_* variable is a real setting; compose, Kubernetes and
// systemd files parse and point at files that exist; cluster files validate with the node's own
// schema; promtool checks the rules, their unit tests and the Prometheus config (promtool comes
// from Debian's `prometheus` package, installed by .ci/run; without it only those checks skip).

import { execFileSync } from "node:child_process";
import {
  copyFileSync,
  existsSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  statSync,
  writeFileSync,
} from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { describe, expect, it } from "vitest";
import { parseAllDocuments, parse as parseYaml } from "yaml";
import { environmentName, settingPaths } from "../../src/config/load.js";
import { clusterFileSchema } from "../../src/node/cluster-file.js";
import { BUSY_PROCESS_NODE_FLAGS } from "../../src/runtime-flags.js";
import { REPO } from "../bus/helpers.js";

const DEPLOY = join(REPO, "deploy");
type Plain = Record<string, unknown>;

function yamlOf(path: string): Plain {
  // merge: compose services share their settings through a `<<: *cfn-node` merge key.
  return parseYaml(readFileSync(join(DEPLOY, path), "utf8"), { merge: true }) as Plain;
}

/** Names and kinds of the generated catalog table in docs/MONITORING.md. */
function catalog(): Map<string, string> {
  const text = readFileSync(join(REPO, "docs", "MONITORING.md"), "utf8");
  const out = new Map<string, string>();
  for (const match of text.matchAll(/^\| `(cfn_[a-z0-9_]+)` \| (counter|gauge|histogram) \|/gm))
    out.set(match[1], match[2]);
  return out;
}

/** cfn_* series a PromQL expression reads; histogram series map back to their metric. */
function metricNames(expr: string): string[] {
  return [...expr.matchAll(/\bcfn_[a-z0-9_]+/g)].map((match) => match[0]);
}

function expectInCatalog(exprs: string[], where: string): void {
  const known = catalog();
  expect(known.size, "catalog parsed").toBeGreaterThan(20);
  expect(exprs.length, `${where} has expressions`).toBeGreaterThan(0);
  for (const expr of exprs) {
    for (const name of metricNames(expr)) {
      const base = name.replace(/_(bucket|sum|count)$/, "");
      const kind = known.get(name) ?? (known.get(base) === "histogram" ? "histogram" : undefined);
      expect(kind, `${where}: ${name} (in ${expr}) is not in docs/MONITORING.md`).toBeDefined();
      if (name.endsWith("_bucket")) expect(kind, `${name} needs a histogram`).toBe("histogram");
    }
  }
}

const SETTING_VARIABLES = new Set(settingPaths().map(({ path }) => environmentName(path)));
/** Read by `cfn node start` and cluster files' tokenEnv, outside the settings schema. */
const EXTRA_VARIABLES = new Set(["CFN_CLUSTER_TOKEN"]);

function expectKnownVariables(names: string[], where: string): void {
  for (const name of names.filter((entry) => entry.startsWith("CFN_")))
    expect(SETTING_VARIABLES.has(name) || EXTRA_VARIABLES.has(name), `${where}: ${name} is no setting`).toBe(
      true,
    );
}

function promtool(): string | undefined {
  try {
    return execFileSync("sh", ["-c", "command -v promtool"], { encoding: "utf8" }).trim() || undefined;
  } catch {
    return undefined;
  }
}

/**
 * `promtool check config` of a copy of a Prometheus config: the config names the rules by their
 * path inside the container, the copy by the file in this repository. Returns promtool's output.
 */
function checkConfigCopy(binary: string, path: string): string {
  const dir = mkdtempSync(join(tmpdir(), "cfn-promtool-"));
  copyFileSync(join(DEPLOY, "prometheus/cfn-alerts.yml"), join(dir, "cfn-alerts.yml"));
  const config = readFileSync(join(DEPLOY, path), "utf8");
  expect(config).toContain("/etc/prometheus/cfn-alerts.yml");
  writeFileSync(join(dir, "config.yml"), config.replace("/etc/prometheus/cfn-alerts.yml", "cfn-alerts.yml"));
  try {
    return execFileSync(binary, ["check", "config", join(dir, "config.yml")], {
      encoding: "utf8",
      stdio: "pipe",
    });
  } catch (error) {
    const failed = error as { stdout?: string; stderr?: string };
    return `${failed.stdout ?? ""}${failed.stderr ?? ""}`;
  }
}

/** The job every alert rule selects (each names exactly one). */
function alertJobs(): Set<string> {
  return new Set(
    alertExprs().flatMap((expr) => [...expr.matchAll(/\bjob="([^"]+)"/g)].map((match) => match[1])),
  );
}

function alertExprs(): string[] {
  const rules = yamlOf("prometheus/cfn-alerts.yml") as { groups: Array<{ rules: Array<{ expr: string }> }> };
  return rules.groups.flatMap((group) => group.rules.map((rule) => rule.expr));
}

function dashboardExprs(): string[] {
  const dashboard = JSON.parse(
    readFileSync(join(DEPLOY, "grafana/dashboards/cfn-overview.json"), "utf8"),
  ) as {
    panels: Array<{ targets?: Array<{ expr: string; datasource?: { uid: string } }> }>;
  };
  return dashboard.panels.flatMap((panel) => (panel.targets ?? []).map((target) => target.expr));
}

describe("deploy/: Prometheus and Grafana", () => {
  it("every metric the alert rules use is in the metric catalog", () => {
    expectInCatalog(alertExprs(), "deploy/prometheus/cfn-alerts.yml");
  });

  it("every metric the Grafana dashboard uses is in the metric catalog, from the provisioned datasource", () => {
    expectInCatalog(dashboardExprs(), "deploy/grafana/dashboards/cfn-overview.json");
    const provisioned = yamlOf("grafana/provisioning/datasources/cfn.yml") as {
      datasources: Array<{ uid: string }>;
    };
    const uids = new Set(provisioned.datasources.map((source) => source.uid));
    const dashboard = readFileSync(join(DEPLOY, "grafana/dashboards/cfn-overview.json"), "utf8");
    for (const match of dashboard.matchAll(/"uid": "([^"]+)"/g))
      if (match[1] !== "cfn-overview") expect(uids.has(match[1]), `datasource ${match[1]}`).toBe(true);
  });

  it("alerts cover the named symptoms", () => {
    const rules = yamlOf("prometheus/cfn-alerts.yml") as {
      groups: Array<{ rules: Array<{ alert: string }> }>;
    };
    const names = rules.groups.flatMap((group) => group.rules.map((rule) => rule.alert));
    for (const expected of [
      "CfnNoLeader",
      "CfnLeaderChanges",
      "CfnCommitLatencyHigh",
      "CfnInboxOverflow",
      "CfnDeadLetters",
      "CfnNodeDown",
      "CfnSpoolBacklog",
    ])
      expect(names).toContain(expected);
  });

  it("the rules are well-formed, and promtool accepts them, their unit tests and the Prometheus config", () => {
    // The shape every rule needs, checked everywhere; promtool's full check where it is installed
    // (Debian package \`prometheus\`; .ci/run installs it).
    const rules = yamlOf("prometheus/cfn-alerts.yml") as {
      groups: Array<{ name: string; rules: Array<Record<string, unknown>> }>;
    };
    expect(rules.groups.length).toBeGreaterThan(0);
    for (const group of rules.groups) {
      expect(group.rules.length, group.name).toBeGreaterThan(0);
      for (const rule of group.rules) {
        expect(rule.alert, JSON.stringify(rule)).toMatch(/^Cfn[A-Za-z]+$/);
        expect(typeof rule.expr === "string" && rule.expr.trim().length > 0, String(rule.alert)).toBe(true);
        expect(["info", "warning", "critical"], String(rule.alert)).toContain(
          (rule.labels as { severity?: string } | undefined)?.severity,
        );
        expect((rule.annotations as { summary?: string } | undefined)?.summary, String(rule.alert)).toMatch(
          /\S{3}/,
        );
      }
    }
    const binary = promtool();
    if (!binary) {
      console.warn(
        "promtool not found (Debian package `prometheus`; .ci/run installs it): only the rule shapes checked",
      );
      return;
    }
    const run = (args: string[]) => execFileSync(binary, args, { encoding: "utf8", stdio: "pipe" });
    expect(run(["check", "rules", join(DEPLOY, "prometheus/cfn-alerts.yml")])).toContain("SUCCESS");
    expect(run(["test", "rules", join(DEPLOY, "prometheus/cfn-alerts.test.yml")])).toContain("SUCCESS");
    expect(checkConfigCopy(binary, "prometheus/prometheus.yml")).toContain("SUCCESS");
  });
});

describe("deploy/: compose", () => {
  const compose = yamlOf("docker-compose.yml") as {
    services: Record<
      string,
      {
        build?: { context: string; dockerfile: string };
        command?: string[];
        environment?: Record<string, string>;
        volumes?: string[];
        image: string;
      }
    >;
  };
  const nodes = Object.entries(compose.services).filter(([, service]) => service.command?.[0] === "node");

  it("runs three cfn nodes, Jaeger with OTLP, Prometheus and Grafana", () => {
    expect(nodes.map(([name]) => name)).toEqual(["cfn-1", "cfn-2", "cfn-3"]);
    expect(compose.services.jaeger.image).toMatch(/^jaegertracing\/all-in-one:/);
    expect(compose.services.prometheus.image).toMatch(/^prom\/prometheus:/);
    expect(compose.services.grafana.image).toMatch(/^grafana\/grafana:/);
    for (const [, service] of nodes) {
      expect(service.environment?.CFN_TRACING_ENDPOINT).toBe("http://jaeger:4318");
      expectKnownVariables(Object.keys(service.environment ?? {}), "docker-compose.yml");
    }
  });

  it("references files that exist, and its cluster file validates with the node's schema", () => {
    for (const [name, service] of Object.entries(compose.services)) {
      if (service.build) {
        const context = join(DEPLOY, service.build.context);
        expect(existsSync(join(context, service.build.dockerfile)), `${name} dockerfile`).toBe(true);
      }
      for (const volume of service.volumes ?? []) {
        const source = volume.split(":")[0];
        if (source.startsWith("."))
          expect(existsSync(join(DEPLOY, source)), `${name} mounts ${source}`).toBe(true);
      }
    }
    const cluster = clusterFileSchema.parse(yamlOf("cluster/compose-cluster.yaml"));
    for (const [name, service] of nodes) {
      const command = service.command ?? [];
      const id = command[command.indexOf("--id") + 1];
      expect(id).toBe(name);
      expect(cluster.nodes.find((node) => node.id === id)?.peer).toBe(`${name}:7101`);
      expect(command[command.indexOf("--advertise-api") + 1]).toBe(`http://${name}:7201`);
    }
    const prometheus = yamlOf("prometheus/prometheus.yml") as {
      scrape_configs: Array<{ job_name: string; static_configs: Array<{ targets: string[] }> }>;
    };
    const job = prometheus.scrape_configs.find((config) => config.job_name === "cfn");
    expect(job?.static_configs[0].targets).toEqual(cluster.nodes.map((node) => node.api));
  });

  it("the Dockerfile copies only paths that exist", () => {
    const dockerfile = readFileSync(join(DEPLOY, "Dockerfile"), "utf8");
    const sources = [...dockerfile.matchAll(/^COPY (?!--from)(.+) \S+$/gm)].flatMap((match) =>
      match[1].split(/\s+/),
    );
    expect(sources.length).toBeGreaterThan(3);
    for (const source of sources) expect(existsSync(join(REPO, source)), `COPY ${source}`).toBe(true);
    // The node daemon runs with cfn's busy-process flags, as launched nodes and the CLI's shebang do.
    const entrypoint = ["node", ...BUSY_PROCESS_NODE_FLAGS, "/app/dist/src/cli/main.js"];
    expect(dockerfile).toContain(`ENTRYPOINT ${JSON.stringify(entrypoint).replaceAll(",", ", ")}`);
    const unit = readFileSync(join(DEPLOY, "systemd/cfn-node.service"), "utf8");
    expect(unit).toContain(
      `ExecStart=/usr/bin/node ${BUSY_PROCESS_NODE_FLAGS.join(" ")} /opt/cfn/dist/src/cli/main.js`,
    );
    expect(existsSync(join(REPO, "dist", "src", "cli", "main.js"))).toBe(true);
  });
});

describe("deploy/: Kubernetes", () => {
  const kustomization = yamlOf("kubernetes/kustomization.yaml") as { resources: string[] };
  const documents = kustomization.resources.flatMap((resource) => {
    const path = join(DEPLOY, "kubernetes", resource);
    expect(existsSync(path), resource).toBe(true);
    return parseAllDocuments(readFileSync(path, "utf8")).map((document) => document.toJSON() as Plain);
  });
  const byKind = (kind: string) => documents.filter((document) => document.kind === kind);

  it("every file of the kustomization exists and parses; no stray manifest is left out", () => {
    const files = readdirSync(join(DEPLOY, "kubernetes")).filter(
      (name) => name !== "kustomization.yaml" && statSync(join(DEPLOY, "kubernetes", name)).isFile(),
    );
    expect(files.sort()).toEqual([...kustomization.resources].sort());
    for (const document of documents)
      expect(document, JSON.stringify(document).slice(0, 200)).toMatchObject({
        apiVersion: expect.stringMatching(/^(v1|apps\/v1)$/),
        kind: expect.stringMatching(/^(StatefulSet|Service|ConfigMap)$/),
        metadata: { name: expect.stringMatching(/^cfn/) },
      });
  });

  it("a StatefulSet behind a headless Service, its pods named in the ConfigMap's cluster file", () => {
    const [set] = byKind("StatefulSet") as Array<{
      spec: {
        serviceName: string;
        replicas: number;
        selector: { matchLabels: Record<string, string> };
        template: {
          spec: { containers: Array<{ args: string[]; envFrom: Array<{ configMapRef: { name: string } }> }> };
        };
      };
    }>;
    const headless = byKind("Service").find(
      (service) => (service.spec as { clusterIP?: string }).clusterIP === "None",
    ) as {
      metadata: { name: string };
      spec: { selector: Record<string, string>; publishNotReadyAddresses: boolean };
    };
    expect(set.spec.serviceName).toBe(headless.metadata.name);
    expect(headless.spec.selector).toEqual(set.spec.selector.matchLabels);
    expect(headless.spec.publishNotReadyAddresses).toBe(true);
    const [configMap] = byKind("ConfigMap") as Array<{
      metadata: { name: string };
      data: Record<string, string>;
    }>;
    const container = set.spec.template.spec.containers[0];
    expect(container.envFrom[0].configMapRef.name).toBe(configMap.metadata.name);
    expectKnownVariables(Object.keys(configMap.data), "kubernetes/configmap.yaml");
    const cluster = clusterFileSchema.parse(parseYaml(configMap.data["cluster.yaml"]));
    expect(cluster.nodes.map((node) => node.id)).toEqual(
      Array.from({ length: set.spec.replicas }, (_, index) => `cfn-${index}`),
    );
    for (const node of cluster.nodes) expect(node.peer).toBe(`${node.id}.${headless.metadata.name}:7101`);
    expect(container.args).toContain("/etc/cfn/cluster.yaml");
  });
});

describe("deploy/: systemd", () => {
  it("the environment file sets only real settings, and systemd-analyze accepts the unit", () => {
    const env = readFileSync(join(DEPLOY, "systemd/cfn.env"), "utf8");
    const names = [...env.matchAll(/^([A-Z_]+)=/gm)].map((match) => match[1]);
    expect(names).toContain("CFN_NODE_ID");
    expectKnownVariables(names, "systemd/cfn.env");
    const unit = join(DEPLOY, "systemd/cfn-node.service");
    expect(readFileSync(unit, "utf8")).toContain("EnvironmentFile=/etc/cfn/cfn.env");
    let analyze: string | undefined;
    try {
      analyze = execFileSync("sh", ["-c", "command -v systemd-analyze"], { encoding: "utf8" }).trim();
    } catch {
      analyze = undefined;
    }
    // The unit starts /usr/bin/node: verify it only where that is where node lives.
    if (!analyze || !existsSync("/usr/bin/node")) {
      console.warn("systemd-analyze or /usr/bin/node missing: unit verification not run");
      return;
    }
    execFileSync(analyze, ["verify", unit], { cwd: dirname(unit), stdio: "pipe" });
  });
});

describe("deploy/: Kubernetes monitoring", () => {
  const set = parseYaml(readFileSync(join(DEPLOY, "kubernetes/statefulset.yaml"), "utf8")) as {
    spec: {
      template: {
        metadata: { labels: Record<string, string>; annotations: Record<string, string> };
        spec: { containers: Array<{ ports: Array<{ name: string; containerPort: number }> }> };
      };
    };
  };
  const podLabels = set.spec.template.metadata.labels;
  const podAnnotations = set.spec.template.metadata.annotations;
  const apiPort = set.spec.template.spec.containers[0].ports.find((port) => port.name === "api");

  it('the alert rules and the dashboard select job="cfn"', () => {
    expect([...alertJobs()]).toEqual(["cfn"]);
    for (const expr of dashboardExprs()) if (expr.includes("{")) expect(expr).toContain('job="cfn"');
  });

  it("the Prometheus Operator's PodMonitor takes job=\"cfn\" from the pods' label and scrapes their API port", () => {
    const kustomization = yamlOf("kubernetes/monitoring/kustomization.yaml") as { resources: string[] };
    expect(kustomization.resources).toEqual(["podmonitor.yaml"]);
    const monitor = yamlOf("kubernetes/monitoring/podmonitor.yaml") as {
      apiVersion: string;
      kind: string;
      spec: {
        jobLabel: string;
        selector: { matchLabels: Record<string, string> };
        podMetricsEndpoints: Array<{ port: string; path: string }>;
      };
    };
    expect(monitor).toMatchObject({ apiVersion: "monitoring.coreos.com/v1", kind: "PodMonitor" });
    // The operator sets job to the value of the pod label jobLabel names.
    expect(alertJobs().has(podLabels[monitor.spec.jobLabel])).toBe(true);
    for (const [label, value] of Object.entries(monitor.spec.selector.matchLabels))
      expect(podLabels[label], label).toBe(value);
    expect(monitor.spec.podMetricsEndpoints).toHaveLength(1);
    expect(monitor.spec.podMetricsEndpoints[0]).toMatchObject({ port: apiPort?.name, path: "/metrics" });
  });

  it('the plain Prometheus config finds the pods as job="cfn", and promtool accepts it', () => {
    const config = yamlOf("prometheus/prometheus-kubernetes.yml") as {
      scrape_configs: Array<{
        job_name: string;
        kubernetes_sd_configs: Array<{ role: string }>;
        relabel_configs: Array<{
          source_labels?: string[];
          regex?: string;
          action?: string;
          target_label?: string;
        }>;
      }>;
    };
    const [job] = config.scrape_configs;
    expect(config.scrape_configs).toHaveLength(1);
    expect(alertJobs().has(job.job_name)).toBe(true);
    expect(job.kubernetes_sd_configs).toEqual([{ role: "pod" }]);
    // No relabelling renames the job.
    expect(job.relabel_configs.some((rule) => rule.target_label === "job")).toBe(false);
    const keeps = job.relabel_configs.filter((rule) => rule.action === "keep");
    const meta = (source: string): string | undefined => {
      const label = /^__meta_kubernetes_pod_label_(.+)$/.exec(source);
      if (label)
        return Object.entries(podLabels).find(
          ([name]) => name.replace(/[^a-zA-Z0-9_]/g, "_") === label[1],
        )?.[1];
      const annotation = /^__meta_kubernetes_pod_annotation_(.+)$/.exec(source);
      if (annotation)
        return Object.entries(podAnnotations).find(
          ([name]) => name.replace(/[^a-zA-Z0-9_]/g, "_") === annotation[1],
        )?.[1];
      if (source === "__meta_kubernetes_pod_container_port_name") return apiPort?.name;
      return undefined;
    };
    // Every keep rule keeps the StatefulSet's pods at their API port (and only that port).
    expect(keeps.length).toBeGreaterThanOrEqual(3);
    for (const rule of keeps) {
      const value = (rule.source_labels ?? []).map(meta).join(";");
      expect(new RegExp(`^(?:${rule.regex})$`).test(value), JSON.stringify(rule)).toBe(true);
    }
    expect(String(apiPort?.containerPort)).toBe(podAnnotations["prometheus.io/port"]);
    const binary = promtool();
    if (!binary) return;
    const output = checkConfigCopy(binary, "prometheus/prometheus-kubernetes.yml");
    // Debian's promtool is built without Kubernetes service discovery.
    if (output.includes("field kubernetes_sd_configs not found")) {
      console.warn(
        "this promtool lacks kubernetes_sd_configs: prometheus-kubernetes.yml checked by shape only",
      );
      return;
    }
    expect(output).toContain("SUCCESS");
  });
});
