/* The machine's floor for spawning process agents (bench/fork-anchor.ts): the same shape as the
 * lean agent's group launch — one process forks `parts` supervisors, each forks its share of
 * `count` children — but a child only reports "ready" on the inherited pipe and waits for SIGTERM.
 * No mailbox, no heartbeat, no files: what is left is fork itself.
 *
 *   fork-anchor COUNT PARTS
 */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <unistd.h>

static sigset_t term_set;

static void child(void) {
  char line[32];
  int n = snprintf(line, sizeof line, "ready %d\n", (int)getpid());
  if (write(1, line, (size_t)n) != n) _exit(1);
  int sig;
  sigwait(&term_set, &sig);
  _exit(0);
}

static void reap_all(void) {
  while (wait(NULL) > 0) {
  }
}

static int supervise(long count) {
  pid_t *pids = calloc((size_t)(count > 0 ? count : 1), sizeof *pids);
  long started = 0;
  for (long i = 0; i < count; i++) {
    pid_t pid = fork();
    if (pid < 0) break;
    if (pid == 0) child();
    pids[started++] = pid;
  }
  int sig;
  sigwait(&term_set, &sig);
  for (long i = 0; i < started; i++) kill(pids[i], SIGTERM);
  reap_all();
  return 0;
}

int main(int argc, char **argv) {
  if (argc != 3) {
    fprintf(stderr, "usage: fork-anchor COUNT PARTS\n");
    return 2;
  }
  long count = strtol(argv[1], NULL, 10), parts = strtol(argv[2], NULL, 10);
  if (count < 1 || parts < 1 || parts > 64) {
    fprintf(stderr, "fork-anchor: COUNT ≥ 1 and 1 ≤ PARTS ≤ 64\n");
    return 2;
  }
  sigemptyset(&term_set);
  sigaddset(&term_set, SIGTERM);
  sigprocmask(SIG_BLOCK, &term_set, NULL);
  pid_t *subs = calloc((size_t)parts, sizeof *subs);
  for (long part = 0; part < parts; part++) {
    long from = count * part / parts, to = count * (part + 1) / parts;
    pid_t pid = fork();
    if (pid < 0) break;
    if (pid == 0) _exit(supervise(to - from));
    subs[part] = pid;
  }
  int sig;
  sigwait(&term_set, &sig);
  for (long part = 0; part < parts; part++)
    if (subs[part] > 0) kill(subs[part], SIGTERM);
  reap_all();
  return 0;
}
