// The etcd anchor of the raft benchmark: 3 etcd members (Debian's etcd-server) on loopback with
// their data dirs on the same disk, measured in the same run as cfn. Skipped with a reason when
// `etcd` is not installed.

import { execFileSync } from "node:child_process";

export interface EtcdAnchorOptions {
  clients: number;
  seconds: number;
  log: (line: string) => void;
}

function which(command: string): string | undefined {
  try {
    return execFileSync("sh", ["-c", `command -v ${command}`], { encoding: "utf8" }).trim() || undefined;
  } catch {
    return undefined;
  }
}

export async function measureEtcdAnchor(options: EtcdAnchorOptions): Promise<Record<string, unknown>> {
  const etcd = which("etcd");
  if (!etcd) {
    const skipped = "etcd is not installed (apt-get install etcd-server etcd-client)";
    options.log(`etcd anchor skipped: ${skipped}`);
    return { skipped };
  }
  return { skipped: "not implemented yet" };
}
