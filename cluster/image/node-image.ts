// Builds the container image of the chaos container backend without a registry: a root
// filesystem holding only this machine's `node` binary and the shared libraries it and the
// repository's native addons (classic-level, msgpackr-extract) link (found with `ldd`), plus
// /etc/passwd, /etc/group and /tmp, turned into an image with `docker import`. The repository
// itself (dist/ and node_modules/) is bind-mounted read-only at /app when a container starts, so
// the image depends only on the node binary and a rebuilt dist/ needs no new image.
//
// The tag carries a hash of the node binary and the library list, so the image is built once per
// machine and reused; building takes a few seconds (about 100 MB, mostly node).

import { execFileSync } from "node:child_process";
import { createHash } from "node:crypto";
import {
  chmodSync,
  copyFileSync,
  mkdirSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  rmSync,
  writeFileSync,
} from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";

export const NODE_IMAGE_REPOSITORY = "cfn-chaos-node";

/** Native addons the node processes load (glibc builds for linux-x64), relative to the repo. */
const NATIVE_ADDON_DIRS = [
  "node_modules/classic-level/prebuilds/linux-x64",
  "node_modules/@msgpackr-extract",
];

function sharedLibraries(binary: string): string[] {
  const out = execFileSync("ldd", [binary], { encoding: "utf8" });
  const libraries: string[] = [];
  for (const line of out.split("\n")) {
    // "libc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x…)" or "/lib64/ld-linux-x86-64.so.2 (0x…)"
    const match = /(?:=>\s*)?(\/\S+)\s+\(0x/.exec(line);
    if (match) libraries.push(match[1]);
  }
  return libraries;
}

function nativeAddons(repo: string): string[] {
  const found: string[] = [];
  for (const dir of NATIVE_ADDON_DIRS) {
    try {
      for (const name of readdirSync(join(repo, dir), { recursive: true }) as string[])
        if (name.endsWith(".node") && !name.includes("musl")) found.push(join(repo, dir, name));
    } catch {
      // addon not installed: nothing of it to serve
    }
  }
  return found;
}

function imageExists(tag: string): boolean {
  try {
    execFileSync("docker", ["image", "inspect", tag], { stdio: "ignore" });
    return true;
  } catch {
    return false;
  }
}

/** The image tag for this machine's node; builds and imports the image when missing. */
export function ensureNodeImage(repo: string): string {
  const node = process.execPath;
  const libraries = [
    ...new Set([node, ...nativeAddons(repo)].flatMap((binary) => sharedLibraries(binary))),
  ].sort();
  const hash = createHash("sha256").update(readFileSync(node)).update(libraries.join("\n")).digest("hex");
  const tag = `${NODE_IMAGE_REPOSITORY}:${process.version.slice(1)}-${hash.slice(0, 12)}`;
  if (imageExists(tag)) return tag;
  const root = mkdtempSync(join(tmpdir(), "cfn-image-"));
  try {
    for (const file of [node, ...libraries]) {
      const target = join(root, file === node ? "/usr/bin/node" : file);
      mkdirSync(dirname(target), { recursive: true });
      copyFileSync(file, target);
      chmodSync(target, 0o755);
    }
    mkdirSync(join(root, "etc"), { recursive: true });
    writeFileSync(join(root, "etc/passwd"), "root:x:0:0:root:/root:/bin/false\n");
    writeFileSync(join(root, "etc/group"), "root:x:0:\n");
    for (const dir of ["tmp", "data", "app", "root"]) mkdirSync(join(root, dir), { recursive: true });
    chmodSync(join(root, "tmp"), 0o1777);
    execFileSync(
      "sh",
      ["-c", `tar -C "${root}" -cf - . | docker import --change 'ENV PATH=/usr/bin' - "${tag}"`],
      {
        stdio: ["ignore", "ignore", "pipe"],
      },
    );
  } finally {
    rmSync(root, { recursive: true, force: true });
  }
  return tag;
}
