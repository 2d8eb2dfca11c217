/*
 * lean-agent: a tiny worker speaking the cfn bus protocol (docs/PROTOCOL.md), one OS process per
 * agent, for swarms of hundreds or thousands of agents on a small machine (a Node process costs
 * 30–50 ms of CPU to start; this one costs well under a millisecond).
 *
 * What it does (docs/COORDINATION.md, "Agent runtimes"):
 *   - opens its mailbox: <bus>/<shard>/<id>/{tmp,inbox,claimed,dead} and heartbeat (shard =
 *     POSIX cksum(id) % shards, shards from <bus>/bus.conf);
 *   - claims inbox files in byte order (priority, then arrival) by rename into claimed/ with the
 *     visibility deadline and its pid in the name, reads single-message and batch files;
 *   - answers `cfn.task` with `cfn.result` {"re":<task id>,"ok":true,"agent":<id>,"output":<input>}
 *     (an echo worker: output = payload.input) and `cfn.direct` with `cfn.direct.reply`; acks
 *     everything else; `cfn.agent.stop` drains and exits;
 *   - acknowledges by unlinking the claim only after the reply was renamed into the sender's inbox;
 *   - files it cannot parse, or delivered deliveriesMax times, go to dead/ with a .reason file;
 *   - wakes up on a SIGUSR2 doorbell (optional hint a sender may ring after a send) or every
 *     --rescan-ms (the safety net for senders that do not ring; 1000 by default, so that a
 *     thousand idle agents cost ~1,000 cheap wake-ups a second, not more); refreshes its
 *     heartbeat every --heartbeat-ms;
 *   - SIGTERM / SIGINT: drains what is queued, then exits 0 (graceful shutdown).
 *
 * Modes:
 *   lean-agent run   --bus-dir D --id ID [options]
 *   lean-agent group --bus-dir D [options] < ids      one supervisor forks one agent per line of
 *       stdin, prints "<id> <pid>" per agent, reaps its children, forwards SIGTERM/SIGINT to them,
 *       and exits when the last one has exited.
 * Options: --ready-to AGENT (send cfn.agent.ready once the mailbox is open), --rescan-ms N (1000),
 *   --heartbeat-ms N (5000), --visibility-ms N (30000), --deliveries-max N (5), --work-ms N (0),
 *   --ready-pipe 1 (group: each agent prints "ready <id> <pid>" on the supervisor's stdout instead),
 *   --fanout K (group: K sub-supervisors fork the agents in parallel, each printing its own "end <n>"; 1..64).
 */
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

/* Path buffers are sized for a bus dir of at most BUS_DIR_LEN_MAX characters (checked at start)
   rather than PATH_MAX: a forked agent writes into every page it touches, and on a VM each such
   copy-on-write fault is a trap, so small, contiguous buffers make each agent's start cheaper. */
#define BUS_DIR_LEN_MAX 256
#define DIR_LEN 512                   /* bus dir + "/" + shard + "/" + id (≤ 128) + "/claimed" */
#define FILE_PATH_LEN (DIR_LEN + 640) /* a dir + "/" + a file name (≤ 600) */
static const char *bus_dir;
static char self_id[160];
static char self_dir[DIR_LEN - 16], inbox_dir[DIR_LEN], claimed_dir[DIR_LEN], tmp_dir[DIR_LEN], dead_dir[DIR_LEN], hb_path[DIR_LEN];
/* This host's name, reduced to [A-Za-z0-9-]: read once before the agents are forked. */
static char host[64] = "host";
/* /dev/null, opened by the supervisor before it forks its agents (-1 in `run` mode). */
static int devnull_fd = -1;
static int shards = 16;
static long rescan_ms = 1000, heartbeat_ms = 5000, visibility_ms = 30000, deliveries_max = 5, work_ms = 0;
static const char *ready_to;
/* group --ready-pipe 1: a child reports "ready <id> <pid>" on the supervisor's stdout (one pipe
   line, read by the spawner) instead of a cfn.agent.ready file message: no per-agent file for the
   spawner to claim, read and remove. */
static long ready_pipe;
/* group --fanout K: K sub-supervisors fork the agents in parallel (default 1: the group forks them). */
static long fanout = 1;
static int supervise(char **ids, size_t id_count, const sigset_t *group_set);
static int reap(pid_t *pids, size_t count, size_t alive, const sigset_t *group_set);
static char uniq_prefix[128];
static unsigned long uniq_counter;
static unsigned long long last_arrival_us;
static unsigned long seq;
static int stopping;
static sigset_t wait_set;

/* ---- small helpers -------------------------------------------------------------------------- */

static unsigned long long now_us(void) {
  struct timeval tv;
  gettimeofday(&tv, NULL);
  return (unsigned long long)tv.tv_sec * 1000000ULL + (unsigned long long)tv.tv_usec;
}

static unsigned long long next_arrival_us(void) {
  unsigned long long now = now_us();
  last_arrival_us = now > last_arrival_us ? now : last_arrival_us + 1;
  return last_arrival_us;
}

static unsigned int crc_table[256];
static void crc_init(void) {
  for (unsigned int i = 0; i < 256; i++) {
    unsigned int crc = i << 24;
    for (int b = 0; b < 8; b++) crc = (crc & 0x80000000u) ? (crc << 1) ^ 0x04c11db7u : crc << 1;
    crc_table[i] = crc;
  }
}
/* POSIX cksum of the bytes of s (same as src/bus/cksum.ts). */
static unsigned int posix_cksum(const char *s) {
  unsigned int crc = 0;
  size_t len = strlen(s);
  for (size_t i = 0; i < len; i++) crc = (crc << 8) ^ crc_table[((crc >> 24) ^ (unsigned char)s[i]) & 0xff];
  for (size_t l = len; l > 0; l >>= 8) crc = (crc << 8) ^ crc_table[((crc >> 24) ^ (l & 0xff)) & 0xff];
  return ~crc;
}

static int valid_id(const char *s) {
  size_t n = strlen(s);
  if (n < 1 || n > 128 || strcmp(s, ".") == 0 || strcmp(s, "..") == 0) return 0;
  for (size_t i = 0; i < n; i++) {
    char c = s[i];
    if (!((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '.' || c == '_' || c == '-')) return 0;
  }
  return 1;
}

static void read_shards(void) {
  char path[FILE_PATH_LEN];
  snprintf(path, sizeof path, "%s/bus.conf", bus_dir);
  FILE *f = fopen(path, "r");
  if (!f) return;
  char line[256];
  while (fgets(line, sizeof line, f)) {
    if (strncmp(line, "shards=", 7) == 0) {
      int n = atoi(line + 7);
      if (n >= 1) shards = n;
    }
  }
  fclose(f);
}

static void agent_dir(const char *id, char *out, size_t size) {
  snprintf(out, size, "%s/%u/%s", bus_dir, posix_cksum(id) % (unsigned)shards, id);
}

/* Creates dir and any missing parents; returns 1 when dir itself was created now. A missing parent
   is found from the bottom up, so a new agent dir under an existing shard costs two failed and one
   successful mkdir, not one per path component. */
static int mkdirs(const char *dir) {
  if (mkdir(dir, 0700) == 0) return 1;
  if (errno != ENOENT) return 0;
  char parent[DIR_LEN + 16];
  snprintf(parent, sizeof parent, "%s", dir);
  char *slash = strrchr(parent, '/');
  if (!slash || slash == parent) return 0;
  *slash = 0;
  mkdirs(parent);
  return mkdir(dir, 0700) == 0;
}

/* Creates the agent's directories; returns 1 when its inbox/ and claimed/ are both new (empty). */
static int ensure_agent_dirs(const char *dir) {
  static const char *subs[] = {"tmp", "inbox", "claimed", "dead"};
  char path[DIR_LEN + 16];
  int fresh = 1;
  for (int i = 0; i < 4; i++) {
    snprintf(path, sizeof path, "%s/%s", dir, subs[i]);
    int created = mkdirs(path);
    if (i == 1 || i == 2) fresh = fresh && created;
  }
  return fresh;
}

static void next_unique(char *out, size_t size) {
  uniq_counter++;
  char b36[32];
  int n = 0;
  unsigned long v = uniq_counter;
  do {
    b36[n++] = "0123456789abcdefghijklmnopqrstuvwxyz"[v % 36];
    v /= 36;
  } while (v);
  char rev[32];
  for (int i = 0; i < n; i++) rev[i] = b36[n - 1 - i];
  rev[n] = 0;
  snprintf(out, size, "%s-%s", uniq_prefix, rev);
}

static int write_all(int fd, const char *buf, size_t len) {
  while (len > 0) {
    ssize_t w = write(fd, buf, len);
    if (w < 0) {
      if (errno == EINTR) continue;
      return -1;
    }
    buf += w;
    len -= (size_t)w;
  }
  return 0;
}

/* Writes `text` as a new message file into `to`'s inbox (tmp/ then rename). 0 on success. */
static int deliver(const char *to, char prio_digit, const char *text, size_t len) {
  char dir[DIR_LEN], unique[200], name[300], tmp_path[FILE_PATH_LEN], inbox_path[FILE_PATH_LEN];
  agent_dir(to, dir, sizeof dir);
  next_unique(unique, sizeof unique);
  snprintf(name, sizeof name, "%c_%016llu_1_%s_0.json", prio_digit, next_arrival_us(), unique);
  for (int attempt = 0; attempt < 3; attempt++) {
    snprintf(tmp_path, sizeof tmp_path, "%s/tmp/%s", dir, name);
    snprintf(inbox_path, sizeof inbox_path, "%s/inbox/%s", dir, name);
    int fd = open(tmp_path, O_WRONLY | O_CREAT | O_EXCL, 0600);
    if (fd < 0) {
      if (errno == ENOENT) {
        ensure_agent_dirs(dir);
        continue;
      }
      return -1;
    }
    int bad = write_all(fd, text, len);
    close(fd);
    if (bad) {
      unlink(tmp_path);
      return -1;
    }
    if (rename(tmp_path, inbox_path) == 0) return 0;
    unlink(tmp_path);
    if (errno != ENOENT) return -1;
    ensure_agent_dirs(dir);
  }
  return -1;
}

/* ---- minimal JSON scanning (enough to walk an envelope; values are copied raw) -------------- */

static const char *skip_ws(const char *p, const char *end) {
  while (p < end && (*p == ' ' || *p == '\n' || *p == '\r' || *p == '\t')) p++;
  return p;
}

static const char *skip_string(const char *p, const char *end) {
  if (p >= end || *p != '"') return NULL;
  for (p++; p < end; p++) {
    if (*p == '\\') {
      p++;
      continue;
    }
    if (*p == '"') return p + 1;
  }
  return NULL;
}

static const char *skip_value(const char *p, const char *end) {
  p = skip_ws(p, end);
  if (p >= end) return NULL;
  if (*p == '"') return skip_string(p, end);
  if (*p == '{' || *p == '[') {
    int depth = 0;
    for (; p < end; p++) {
      if (*p == '"') {
        p = skip_string(p, end);
        if (!p) return NULL;
        p--;
        continue;
      }
      if (*p == '{' || *p == '[') depth++;
      else if (*p == '}' || *p == ']') {
        depth--;
        if (depth == 0) return p + 1;
      }
    }
    return NULL;
  }
  while (p < end && *p != ',' && *p != '}' && *p != ']' && *p != ' ' && *p != '\n' && *p != '\r' && *p != '\t') p++;
  return p;
}

/* Finds member `key` of the object at p; sets [*vs, *ve) to its raw value. 1 when found. */
static int obj_get(const char *p, const char *end, const char *key, const char **vs, const char **ve) {
  p = skip_ws(p, end);
  if (p >= end || *p != '{') return 0;
  p++;
  size_t klen = strlen(key);
  for (;;) {
    p = skip_ws(p, end);
    if (p >= end || *p == '}') return 0;
    const char *ks = p;
    const char *ke = skip_string(p, end);
    if (!ke) return 0;
    p = skip_ws(ke, end);
    if (p >= end || *p != ':') return 0;
    p = skip_ws(p + 1, end);
    const char *ve_ = skip_value(p, end);
    if (!ve_) return 0;
    if ((size_t)(ke - ks - 2) == klen && memcmp(ks + 1, key, klen) == 0) {
      *vs = p;
      *ve = ve_;
      return 1;
    }
    p = skip_ws(ve_, end);
    if (p < end && *p == ',') p++;
  }
}

/* Copies a JSON string member without escapes into out (ids, types are validated escape-free). */
static int obj_get_plain_string(const char *p, const char *end, const char *key, char *out, size_t size) {
  const char *vs, *ve;
  if (!obj_get(p, end, key, &vs, &ve)) return 0;
  if (*vs != '"' || ve - vs < 2) return 0;
  size_t n = (size_t)(ve - vs - 2);
  if (n + 1 > size || memchr(vs + 1, '\\', n)) return 0;
  memcpy(out, vs + 1, n);
  out[n] = 0;
  return 1;
}

/* ---- handling ------------------------------------------------------------------------------- */

static char *out_buf;
static size_t out_cap;

static void out_reserve(size_t need) {
  if (need <= out_cap) return;
  out_cap = need * 2;
  out_buf = realloc(out_buf, out_cap);
  if (!out_buf) {
    perror("lean-agent: out of memory");
    exit(1);
  }
}

/* Handles one envelope; returns 0 when it may be acked, -1 to leave the claim (redelivery). */
static int handle_envelope(const char *p, const char *end) {
  char id[160], from[160], type[160], prio[16];
  if (!obj_get_plain_string(p, end, "id", id, sizeof id) || !obj_get_plain_string(p, end, "from", from, sizeof from) ||
      !obj_get_plain_string(p, end, "type", type, sizeof type))
    return 1; /* malformed: dead-letter */
  if (!obj_get_plain_string(p, end, "priority", prio, sizeof prio)) strcpy(prio, "normal");
  if (!valid_id(from)) return 1;
  const char *reply_type;
  if (strcmp(type, "cfn.task") == 0) reply_type = "cfn.result";
  else if (strcmp(type, "cfn.direct") == 0) reply_type = "cfn.direct.reply";
  else {
    if (strcmp(type, "cfn.agent.stop") == 0) stopping = 1;
    return 0;
  }
  const char *hs = "{}", *he = hs + 2;
  if (!obj_get(p, end, "headers", &hs, &he)) {
    hs = "{}";
    he = hs + 2;
  }
  const char *ps = "null", *pe = ps + 4, *is, *ie;
  if (obj_get(p, end, "payload", &ps, &pe) && obj_get(ps, pe, "input", &is, &ie)) {
    ps = is;
    pe = ie;
  } else if (!obj_get(p, end, "payload", &ps, &pe)) {
    ps = "null";
    pe = ps + 4;
  }
  if (work_ms > 0) {
    struct timespec ts = {work_ms / 1000, (work_ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {
    }
  }
  char reply_id[200];
  next_unique(reply_id, sizeof reply_id);
  for (char *c = reply_id; *c; c++)
    if (*c == '_') *c = '-';
  char digit = prio[0] == 'h' ? '0' : prio[0] == 'l' ? '2' : '1';
  size_t need = (size_t)(he - hs) + (size_t)(pe - ps) + 1024;
  out_reserve(need);
  int n = snprintf(out_buf, out_cap,
                   "{\"v\":1,\"id\":\"%s\",\"from\":\"%s\",\"to\":\"%s\",\"type\":\"%s\",\"priority\":\"%s\",\"seq\":%lu,\"ts\":%llu,\n"
                   "\"headers\":%.*s,\n\"payload\":{\"re\":\"%s\",\"ok\":true,\"agent\":\"%s\",\"output\":%.*s}}\n",
                   reply_id, self_id, from, reply_type, prio, ++seq, now_us(), (int)(he - hs), hs, id, self_id, (int)(pe - ps), ps);
  if (n < 0 || (size_t)n >= out_cap) return -1;
  return deliver(from, digit, out_buf, (size_t)n) == 0 ? 0 : -1;
}

static void dead_letter(const char *claimed_path, const char *file_name, const char *cause, const char *reason, long deliveries) {
  char reason_path[FILE_PATH_LEN], dead_path[FILE_PATH_LEN], text[1024];
  snprintf(reason_path, sizeof reason_path, "%s/%s.reason", dead_dir, file_name);
  snprintf(dead_path, sizeof dead_path, "%s/%s", dead_dir, file_name);
  int n = snprintf(text, sizeof text, "{\"cause\":\"%s\",\"reason\":\"%s\",\"deliveries\":%ld,\"agent\":\"%s\",\"pid\":%d}\n", cause, reason,
                   deliveries, self_id, (int)getpid());
  int fd = open(reason_path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
  if (fd >= 0) {
    write_all(fd, text, (size_t)n);
    close(fd);
  }
  if (rename(claimed_path, dead_path) != 0) unlink(reason_path);
}

static char *read_file(const char *path, size_t *len) {
  int fd = open(path, O_RDONLY);
  if (fd < 0) return NULL;
  struct stat st;
  if (fstat(fd, &st) != 0) {
    close(fd);
    return NULL;
  }
  char *buf = malloc((size_t)st.st_size + 1);
  size_t got = 0;
  while (buf && got < (size_t)st.st_size) {
    ssize_t r = read(fd, buf + got, (size_t)st.st_size - got);
    if (r < 0 && errno == EINTR) continue;
    if (r <= 0) break;
    got += (size_t)r;
  }
  close(fd);
  if (buf) buf[got] = 0;
  *len = got;
  return buf;
}

/* Claims and handles one inbox file. */
static void process_file(const char *name) {
  size_t nlen = strlen(name);
  if (nlen < 6 || strcmp(name + nlen - 5, ".json") != 0) return;
  /* P_T_N_UNIQ_D.json: the prefix up to the last '_' is kept, D is bumped. */
  const char *last = strrchr(name, '_');
  char inbox_path[FILE_PATH_LEN], claimed_path[FILE_PATH_LEN], claimed_name[600];
  snprintf(inbox_path, sizeof inbox_path, "%s/%s", inbox_dir, name);
  if (!last || last == name || name[1] != '_') {
    dead_letter(inbox_path, name, "foreign", "file name does not follow the protocol", 0);
    return;
  }
  long deliveries = strtol(last + 1, NULL, 10);
  if (deliveries >= deliveries_max) {
    dead_letter(inbox_path, name, "deliveries_exhausted", "delivered deliveriesMax times", deliveries);
    return;
  }
  unsigned long long deadline = now_us() / 1000 + (unsigned long long)visibility_ms;
  snprintf(claimed_name, sizeof claimed_name, "%.*s_%ld_%llu_%d.json", (int)(last - name), name, deliveries + 1, deadline, (int)getpid());
  snprintf(claimed_path, sizeof claimed_path, "%s/%s", claimed_dir, claimed_name);
  if (rename(inbox_path, claimed_path) != 0) return; /* another consumer won */
  size_t len;
  char *text = read_file(claimed_path, &len);
  if (!text) return;
  const char *end = text + len, *vs, *ve;
  int result = 0;
  if (obj_get(text, end, "batch", &vs, &ve) && *vs == '[') {
    const char *p = vs + 1;
    for (;;) {
      p = skip_ws(p, ve);
      if (p >= ve || *p == ']') break;
      const char *e = skip_value(p, ve);
      if (!e) {
        result = 1;
        break;
      }
      int r = handle_envelope(p, e);
      if (r != 0) result = r;
      p = skip_ws(e, ve);
      if (p < ve && *p == ',') p++;
    }
  } else {
    result = handle_envelope(text, end);
  }
  free(text);
  if (result == 0) unlink(claimed_path);
  else if (result > 0) dead_letter(claimed_path, claimed_name, "malformed", "lean-agent cannot read this envelope", deliveries + 1);
  else {
    /* Reply failed: hand the file back (the delivery counts) so it is retried. */
    char back[FILE_PATH_LEN];
    snprintf(back, sizeof back, "%s/%.*s_%ld.json", inbox_dir, (int)(last - name), name, deliveries + 1);
    rename(claimed_path, back);
  }
}

static int cmp_names(const void *a, const void *b) { return strcmp(*(char *const *)a, *(char *const *)b); }

/* One scan of the inbox; returns the number of files seen. */
static int scan_once(void) {
  DIR *d = opendir(inbox_dir);
  if (!d) {
    ensure_agent_dirs(self_dir);
    return 0;
  }
  char **names = NULL;
  size_t count = 0, cap = 0;
  struct dirent *e;
  while ((e = readdir(d))) {
    if (e->d_name[0] == '.') continue;
    if (count == cap) {
      cap = cap ? cap * 2 : 16;
      names = realloc(names, cap * sizeof *names);
    }
    names[count++] = strdup(e->d_name);
  }
  closedir(d);
  qsort(names, count, sizeof *names, cmp_names);
  for (size_t i = 0; i < count; i++) {
    process_file(names[i]);
    free(names[i]);
  }
  free(names);
  return (int)count;
}

static void heartbeat(void) {
  if (utimensat(AT_FDCWD, hb_path, NULL, 0) != 0) {
    int fd = open(hb_path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
    if (fd >= 0) {
      char text[32];
      int n = snprintf(text, sizeof text, "%d\n", (int)getpid());
      write_all(fd, text, (size_t)n);
      close(fd);
    }
  }
}

/* Returns claims of dead consumers and expired claims to the inbox (crashed-consumer recovery). */
static void recover_claims(void) {
  DIR *d = opendir(claimed_dir);
  if (!d) return;
  struct dirent *e;
  unsigned long long now_ms = now_us() / 1000;
  while ((e = readdir(d))) {
    if (e->d_name[0] == '.') continue;
    /* ..._D_DEADLINE_PID.json */
    char name[600];
    snprintf(name, sizeof name, "%s", e->d_name);
    size_t n = strlen(name);
    if (n < 6 || strcmp(name + n - 5, ".json") != 0) continue;
    name[n - 5] = 0;
    char *pid_s = strrchr(name, '_');
    if (!pid_s) continue;
    *pid_s++ = 0;
    char *deadline_s = strrchr(name, '_');
    if (!deadline_s) continue;
    *deadline_s++ = 0;
    int pid = atoi(pid_s);
    unsigned long long deadline = strtoull(deadline_s, NULL, 10);
    int alive = pid == getpid() || kill(pid, 0) == 0 || errno == EPERM;
    if (deadline > now_ms && alive) continue;
    char from[FILE_PATH_LEN], to[FILE_PATH_LEN];
    snprintf(from, sizeof from, "%s/%s", claimed_dir, e->d_name);
    snprintf(to, sizeof to, "%s/%s.json", inbox_dir, name);
    rename(from, to);
  }
  closedir(d);
}

static int send_ready(void) {
  char text[1024], reply_id[200];
  next_unique(reply_id, sizeof reply_id);
  int n = snprintf(text, sizeof text,
                   "{\"v\":1,\"id\":\"%s\",\"from\":\"%s\",\"to\":\"%s\",\"type\":\"cfn.agent.ready\",\"priority\":\"high\",\"seq\":%lu,\"ts\":%llu,\n"
                   "\"headers\":{},\n\"payload\":{\"agent\":\"%s\",\"pid\":%d,\"runtime\":\"lean-c\"}}\n",
                   reply_id, self_id, ready_to, ++seq, now_us(), self_id, (int)getpid());
  return deliver(ready_to, '0', text, (size_t)n);
}

static int run_agent(const char *id) {
  snprintf(self_id, sizeof self_id, "%s", id);
  if (!valid_id(self_id)) {
    fprintf(stderr, "lean-agent: invalid agent id %s\n", id);
    return 2;
  }
  unsigned int rnd = (unsigned int)(now_us() ^ ((unsigned long long)getpid() << 16));
  snprintf(uniq_prefix, sizeof uniq_prefix, "%s-%d-%08x", host, (int)getpid(), rnd * 2654435761u);
  agent_dir(self_id, self_dir, sizeof self_dir);
  snprintf(inbox_dir, sizeof inbox_dir, "%s/inbox", self_dir);
  snprintf(claimed_dir, sizeof claimed_dir, "%s/claimed", self_dir);
  snprintf(tmp_dir, sizeof tmp_dir, "%s/tmp", self_dir);
  snprintf(dead_dir, sizeof dead_dir, "%s/dead", self_dir);
  snprintf(hb_path, sizeof hb_path, "%s/heartbeat", self_dir);
  /* A mailbox created just now holds neither messages nor claims: no recovery, and no scan until
     the doorbell (SIGUSR2) or the rescan timer says there may be something. */
  int fresh = ensure_agent_dirs(self_dir);
  heartbeat();
  if (!fresh) recover_claims();
  if (ready_pipe) {
    /* The mailbox is open: tell the spawner through the inherited pipe (one write < PIPE_BUF is
       atomic), then let go of the pipe so that it closes once every agent reported. */
    char text[320];
    int n = snprintf(text, sizeof text, "ready %s %d\n", self_id, (int)getpid());
    if (write(1, text, (size_t)n) != n) fprintf(stderr, "lean-agent %s: cannot report ready\n", self_id);
    int devnull = devnull_fd >= 0 ? devnull_fd : open("/dev/null", O_RDWR | O_CLOEXEC);
    if (devnull >= 0) dup2(devnull, 1);
  } else if (ready_to && send_ready() != 0) {
    fprintf(stderr, "lean-agent %s: cannot send ready to %s\n", self_id, ready_to);
  }
  unsigned long long last_hb = now_us(), last_recover = now_us();
  int skip_scan = fresh;
  for (;;) {
    int seen = skip_scan ? 0 : scan_once();
    skip_scan = 0;
    unsigned long long now = now_us();
    if (now - last_hb >= (unsigned long long)heartbeat_ms * 1000) {
      heartbeat();
      last_hb = now;
    }
    if (now - last_recover >= (unsigned long long)rescan_ms * 1000 * 4) {
      recover_claims();
      last_recover = now;
    }
    if (stopping && seen == 0) return 0;
    if (seen > 0) continue; /* more may have arrived meanwhile */
    struct timespec timeout = {rescan_ms / 1000, (rescan_ms % 1000) * 1000000L};
    int sig = sigtimedwait(&wait_set, NULL, &timeout);
    if (sig == SIGTERM || sig == SIGINT) stopping = 1; /* drain: one more scan, then exit */
  }
}

static long arg_long(const char *v) { return v ? strtol(v, NULL, 10) : 0; }

int main(int argc, char **argv) {
  if (argc < 2 || (strcmp(argv[1], "run") != 0 && strcmp(argv[1], "group") != 0)) {
    fprintf(stderr, "usage: lean-agent run|group --bus-dir DIR [--id ID] [--ready-to AGENT] [--rescan-ms N] [--heartbeat-ms N] "
                    "[--visibility-ms N] [--deliveries-max N] [--work-ms N] [--ready-pipe 1]\n");
    return 2;
  }
  const char *id = NULL;
  for (int i = 2; i + 1 < argc; i += 2) {
    const char *k = argv[i], *v = argv[i + 1];
    if (!strcmp(k, "--bus-dir")) bus_dir = v;
    else if (!strcmp(k, "--id")) id = v;
    else if (!strcmp(k, "--ready-to")) ready_to = v;
    else if (!strcmp(k, "--rescan-ms")) rescan_ms = arg_long(v);
    else if (!strcmp(k, "--heartbeat-ms")) heartbeat_ms = arg_long(v);
    else if (!strcmp(k, "--visibility-ms")) visibility_ms = arg_long(v);
    else if (!strcmp(k, "--deliveries-max")) deliveries_max = arg_long(v);
    else if (!strcmp(k, "--work-ms")) work_ms = arg_long(v);
    else if (!strcmp(k, "--ready-pipe")) ready_pipe = arg_long(v);
    else if (!strcmp(k, "--fanout")) fanout = arg_long(v);
    else {
      fprintf(stderr, "lean-agent: unknown option %s\n", k);
      return 2;
    }
  }
  if (!bus_dir || rescan_ms < 1 || heartbeat_ms < 1 || visibility_ms < 1 || deliveries_max < 1 || work_ms < 0 ||
      fanout < 1 || fanout > 64) {
    fprintf(stderr, "lean-agent: --bus-dir is required and limits must be positive\n");
    return 2;
  }
  if (ready_to && !valid_id(ready_to)) {
    fprintf(stderr, "lean-agent: invalid --ready-to id\n");
    return 2;
  }
  if (strlen(bus_dir) > BUS_DIR_LEN_MAX) {
    fprintf(stderr, "lean-agent: --bus-dir longer than %d characters\n", BUS_DIR_LEN_MAX);
    return 2;
  }
  crc_init();
  read_shards();
  gethostname(host, sizeof host - 1);
  for (char *c = host; *c; c++)
    if (!((*c >= 'A' && *c <= 'Z') || (*c >= 'a' && *c <= 'z') || (*c >= '0' && *c <= '9') || *c == '-')) *c = '-';
  host[48] = 0;
  sigemptyset(&wait_set);
  sigaddset(&wait_set, SIGUSR2);
  sigaddset(&wait_set, SIGTERM);
  sigaddset(&wait_set, SIGINT);
  sigprocmask(SIG_BLOCK, &wait_set, NULL);
  if (!strcmp(argv[1], "run")) {
    if (!id) {
      fprintf(stderr, "lean-agent run: --id is required\n");
      return 2;
    }
    return run_agent(id);
  }
  /* group: read the ids on stdin, fork one agent per id (through fanout sub-supervisors), supervise. */
  sigset_t group_set = wait_set;
  sigaddset(&group_set, SIGCHLD);
  sigprocmask(SIG_BLOCK, &group_set, NULL);
  size_t id_cap = 64, id_count = 0;
  char **ids = malloc(id_cap * sizeof *ids);
  char line[512];
  while (fgets(line, sizeof line, stdin)) {
    line[strcspn(line, "\r\n")] = 0;
    if (!line[0]) continue;
    if (!valid_id(line)) {
      fprintf(stderr, "lean-agent group: skipping invalid id %s\n", line);
      continue;
    }
    if (id_count == id_cap) ids = realloc(ids, (id_cap *= 2) * sizeof *ids);
    ids[id_count++] = strdup(line);
  }
  /* Fan-out: sub-supervisors fork their slices in parallel (one per CPU core is what pays: a fork
     costs ~0.6 ms of kernel time on some VMs). The spawner starts one process; Node's own spawn of a
     large process costs far more than a fork of this small one. */
  size_t parts = fanout < 1 ? 1 : (size_t)fanout;
  if (parts > id_count) parts = id_count > 0 ? id_count : 1;
  if (parts == 1) return supervise(ids, id_count, &group_set);
  pid_t *subs = calloc(parts, sizeof *subs);
  size_t subs_alive = 0;
  for (size_t part = 0; part < parts; part++) {
    size_t from = id_count * part / parts, to = id_count * (part + 1) / parts;
    fflush(stdout);
    pid_t pid = fork();
    if (pid < 0) {
      perror("lean-agent group: fork");
      break;
    }
    if (pid == 0) _exit(supervise(ids + from, to - from, &group_set));
    subs[part] = pid;
    subs_alive++;
  }
  fclose(stdout); /* the sub-supervisors and agents hold the pipe until they have reported */
  return reap(subs, parts, subs_alive, &group_set);
}

/* Forks one agent per id, prints "<id> <pid>" each and "end <count>", then reaps them. */
static int supervise(char **ids, size_t id_count, const sigset_t *group_set) {
  pid_t *pids = calloc(id_count > 0 ? id_count : 1, sizeof *pids);
  size_t count = 0;
  /* Opened once here: each agent only dup2s it over its stdin (and stdout). Lines go out with
     write(2), so stdout's buffer is flushed once, not before every fork. */
  int devnull = devnull_fd = open("/dev/null", O_RDWR | O_CLOEXEC);
  fflush(stdout);
  for (size_t i = 0; i < id_count; i++) {
    pid_t pid = fork();
    if (pid < 0) {
      perror("lean-agent group: fork");
      break;
    }
    if (pid == 0) {
      sigprocmask(SIG_SETMASK, &wait_set, NULL);
      /* Let go of the supervisor's pipes: the spawner reads stdout until it closes. */
      if (devnull >= 0) {
        dup2(devnull, 0);
        if (!ready_pipe) dup2(devnull, 1); /* with --ready-pipe, run_agent lets go after reporting */
      }
      _exit(run_agent(ids[i]));
    }
    pids[count++] = pid;
    /* One write per line (< PIPE_BUF): lines of sibling sub-supervisors never interleave. */
    char text[256];
    int n = snprintf(text, sizeof text, "%s %d\n", ids[i], (int)pid);
    if (write(1, text, (size_t)n) != n) fprintf(stderr, "lean-agent group: cannot report pid\n");
  }
  char text[64];
  int n = snprintf(text, sizeof text, "end %d\n", (int)count);
  if (write(1, text, (size_t)n) != n) fprintf(stderr, "lean-agent group: cannot report end\n");
  fclose(stdout);
  return reap(pids, count, count, group_set);
}

/* Waits for `alive` of `pids` to exit, forwarding SIGTERM/SIGINT to them. */
static int reap(pid_t *pids, size_t count, size_t alive, const sigset_t *group_set) {
  while (alive > 0) {
    int sig = sigwaitinfo(group_set, NULL);
    if (sig == SIGTERM || sig == SIGINT) {
      for (size_t i = 0; i < count; i++)
        if (pids[i] > 0) kill(pids[i], SIGTERM);
    }
    pid_t done;
    while ((done = waitpid(-1, NULL, WNOHANG)) > 0) {
      for (size_t i = 0; i < count; i++)
        if (pids[i] == done) {
          pids[i] = 0;
          alive--;
        }
    }
  }
  return 0;
}
