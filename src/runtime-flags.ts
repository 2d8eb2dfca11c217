// Node/V8 flags of cfn's busy processes: the `cfn` CLI itself (its shebang, so `cfn node start`
// has them however it is started), the node daemons the cluster launchers spawn, and the
// benchmark workers that stand for such processes.
//
// --min-semi-space-size: V8 starts a process with a 1 MiB young generation and grows it only when
// many objects survive. A process moving tens of thousands of messages a second then scavenges
// every few milliseconds, so messages in flight (a claimed batch, the inbox listing) survive two
// scavenges, are promoted to the old generation and die there; old-space pages are released and
// faulted in again, and a page fault costs ≈ 11 µs on this kind of VM. Starting at 16 MiB (V8's
// default maximum) lets in-flight messages die young: a receiver's CPU per message drops by about
// a quarter (docs/PERFORMANCE.md, "Heap settings"). The cost is up to 32 MiB more resident memory
// per process, which is why the agent runners the spawner starts by the hundred do not get it.
// V8 reads this flag only at start-up and Node refuses it in NODE_OPTIONS, so it is passed on the
// command line.

/** Young-generation size for busy cfn processes, MiB per semi-space. */
export const BUSY_SEMI_SPACE_MIB = 16;

/** Node command-line flags for a busy cfn process (put before the script path). */
export const BUSY_PROCESS_NODE_FLAGS: readonly string[] = [`--min-semi-space-size=${BUSY_SEMI_SPACE_MIB}`];
