/*
 * The bus's per-file system calls, one Node-API call per step (src/bus/file-io.ts). Each node:fs
 * sync call costs a JavaScript wrapper (argument checks, path conversion, an error context, a
 * trace-category check) on top of its system call; a send takes four such calls and a claim
 * four more. Here each step is one call into C that makes the same system calls in the same
 * order, with the same flags, so files on the bus are exactly what the JavaScript path writes.
 *
 * Results are numbers, never exceptions: >= 0 is success (bytes read for renameAndRead), a
 * negative value is -(step * 65536 + errno), where step names the system call that failed; the
 * caller turns it into an error like node:fs's.
 *
 * Built by `npm run build` (src/native/build.ts) with the machine's C compiler against Node's
 * headers; without them the bus uses its JavaScript path.
 */
#ifdef __linux__
#define _GNU_SOURCE /* SCHED_IDLE */
#endif
#define NAPI_VERSION 8
#include <node_api.h>

#ifdef __linux__
#include <sched.h>
#endif
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#ifndef O_CLOEXEC
#define O_CLOEXEC 0
#endif

/* Steps reported in failures (see src/bus/file-io.ts, NATIVE_STEPS). */
#define STEP_OPEN 1
#define STEP_WRITE 2
#define STEP_RENAME 3
#define STEP_READ 4
#define STEP_UNLINK 5
#define STEP_ARGUMENT 6
#define STEP_SCHEDULE 7
/* claim_read found no regular file under the claimed name (a FIFO, directory, device or symlink:
 * not written by a sender; opened without blocking and without following links). */
#define STEP_NOT_REGULAR 8

#define PATH_BYTES_MAX 4096
/* A text buffer kept between sends only up to this size; a larger one is freed after use. */
#define TEXT_BYTES_KEPT (4 * 1024 * 1024)

typedef struct {
  char *text;
  size_t capacity;
  /* The descriptor of the last claim's read, closed on the next call (see close_pending). */
  int pending_fd;
} instance_t;

static napi_value number(napi_env env, double value) {
  napi_value result;
  napi_create_double(env, value, &result);
  return result;
}

static napi_value failure(napi_env env, int step, int error) {
  return number(env, -((double)step * 65536.0 + (double)error));
}

/* Copies a JavaScript string argument as UTF-8 into out; 0 on success. */
static int path_argument(napi_env env, napi_value value, char *out) {
  size_t length = 0;
  if (napi_get_value_string_utf8(env, value, out, PATH_BYTES_MAX, &length) != napi_ok) return -1;
  return length >= PATH_BYTES_MAX - 1 ? -1 : 0;
}

static void instance_free(napi_env env, void *data, void *hint) {
  (void)env;
  (void)hint;
  instance_t *instance = data;
  if (instance->pending_fd >= 0) close(instance->pending_fd);
  free(instance->text);
  free(instance);
}

static instance_t *instance_of(napi_env env) {
  void *data = NULL;
  napi_get_instance_data(env, &data);
  return data;
}

/* A claim's read-only descriptor is closed at the start of the helper's next call (usually the
 * ack's unlink) instead of before the claim returns: the close is then off the wake-up path of a
 * receiver. At most one descriptor is ever held this way; flush() closes it. */
static void close_pending(instance_t *instance) {
  if (instance->pending_fd >= 0) {
    close(instance->pending_fd);
    instance->pending_fd = -1;
  }
}

/* Copies the JavaScript string `value` as UTF-8 into the instance's text buffer (grown as needed);
 * 0 and its length in *length, or an errno. */
static int text_argument(napi_env env, instance_t *instance, napi_value value, size_t *length) {
  if (napi_get_value_string_utf8(env, value, NULL, 0, length) != napi_ok) return EINVAL;
  if (*length + 1 > instance->capacity) {
    char *bigger = malloc(*length + 1);
    if (bigger == NULL) return ENOMEM;
    free(instance->text);
    instance->text = bigger;
    instance->capacity = *length + 1;
  }
  napi_get_value_string_utf8(env, value, instance->text, instance->capacity, length);
  return 0;
}

/* Frees a text buffer grown past TEXT_BYTES_KEPT by a large message. */
static void trim_text(instance_t *instance) {
  if (instance->capacity > TEXT_BYTES_KEPT) {
    free(instance->text);
    instance->text = NULL;
    instance->capacity = 0;
  }
}

/* Writes the instance's text (length bytes) to fd, renames tmp_path to final_path and closes fd
 * (the rename before the close: the file is complete once write returned, and the receiver's
 * inotify event, raised by the rename, does not wait for the close). On failure tmp_path is
 * removed. Returns 0, or the failing step with its errno in *error. */
static int write_rename_close(instance_t *instance, int fd, size_t length, const char *tmp_path,
                              const char *final_path, int *error) {
  int step = 0;
  size_t written = 0;
  while (written < length) {
    ssize_t count = write(fd, instance->text + written, length - written);
    if (count < 0) {
      if (errno == EINTR) continue;
      step = STEP_WRITE;
      *error = errno;
      break;
    }
    written += (size_t)count;
  }
  if (step == 0 && rename(tmp_path, final_path) != 0) {
    step = STEP_RENAME;
    *error = errno;
  }
  close(fd);
  if (step != 0) unlink(tmp_path);
  return step;
}

/* writeAndRename(tmpPath, finalPath, text, mode): open O_WRONLY|O_CREAT|O_TRUNC, write all, rename,
 * close (write_rename_close). Returns 0 or a failure code. */
static napi_value write_and_rename(napi_env env, napi_callback_info info) {
  size_t argc = 4;
  napi_value argv[4];
  char tmp_path[PATH_BYTES_MAX];
  char final_path[PATH_BYTES_MAX];
  napi_get_cb_info(env, info, &argc, argv, NULL, NULL);
  if (argc < 4 || path_argument(env, argv[0], tmp_path) || path_argument(env, argv[1], final_path))
    return failure(env, STEP_ARGUMENT, EINVAL);
  int32_t mode = 0;
  if (napi_get_value_int32(env, argv[3], &mode) != napi_ok) return failure(env, STEP_ARGUMENT, EINVAL);
  instance_t *instance = instance_of(env);
  close_pending(instance);
  size_t length = 0;
  int error = text_argument(env, instance, argv[2], &length);
  if (error != 0) return failure(env, STEP_ARGUMENT, error);
  int step = 0;
  int fd = open(tmp_path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, (mode_t)mode);
  if (fd < 0) {
    step = STEP_OPEN;
    error = errno;
  } else {
    step = write_rename_close(instance, fd, length, tmp_path, final_path, &error);
  }
  trim_text(instance);
  return step == 0 ? number(env, 0) : failure(env, step, error);
}

/* openSpare(path, mode): creates a new empty file O_WRONLY|O_CREAT|O_EXCL (never an existing one)
 * and returns its descriptor, or a failure code. A sender holds one so that a send's critical path
 * is write + rename (writeFdAndRename), the open done after the previous send. */
static napi_value open_spare(napi_env env, napi_callback_info info) {
  size_t argc = 2;
  napi_value argv[2];
  char path[PATH_BYTES_MAX];
  napi_get_cb_info(env, info, &argc, argv, NULL, NULL);
  if (argc < 2 || path_argument(env, argv[0], path)) return failure(env, STEP_ARGUMENT, EINVAL);
  int32_t mode = 0;
  if (napi_get_value_int32(env, argv[1], &mode) != napi_ok) return failure(env, STEP_ARGUMENT, EINVAL);
  close_pending(instance_of(env));
  int fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, (mode_t)mode);
  return fd < 0 ? failure(env, STEP_OPEN, errno) : number(env, fd);
}

/* writeFdAndRename(fd, sparePath, finalPath, text): writes text into the spare file open as fd,
 * renames it to finalPath and closes fd (write_rename_close). On failure the spare is removed and
 * fd closed all the same: the caller holds no spare afterwards either way. */
static napi_value write_fd_and_rename(napi_env env, napi_callback_info info) {
  size_t argc = 4;
  napi_value argv[4];
  char spare_path[PATH_BYTES_MAX];
  char final_path[PATH_BYTES_MAX];
  napi_get_cb_info(env, info, &argc, argv, NULL, NULL);
  int32_t fd = -1;
  if (argc < 4 || napi_get_value_int32(env, argv[0], &fd) != napi_ok || fd < 0)
    return failure(env, STEP_ARGUMENT, EINVAL);
  instance_t *instance = instance_of(env);
  close_pending(instance);
  size_t length = 0;
  int error = 0;
  int spare_named = path_argument(env, argv[1], spare_path) == 0;
  if (!spare_named || path_argument(env, argv[2], final_path))
    error = EINVAL;
  else
    error = text_argument(env, instance, argv[3], &length);
  if (error != 0) {
    close(fd);
    if (spare_named) unlink(spare_path);
    return failure(env, STEP_ARGUMENT, error);
  }
  int step = write_rename_close(instance, fd, length, spare_path, final_path, &error);
  trim_text(instance);
  return step == 0 ? number(env, 0) : failure(env, step, error);
}

/* Renames from_name (relative to from_dir) to to_name (relative to to_dir), then reads the renamed
 * file from its start into data until end of file or capacity bytes. A short read of a regular file
 * is its end (the sender's write completed before its rename), so a small file takes one read, not a
 * second one returning 0. The descriptor is left in instance->pending_fd (closed on the next call).
 * Returns the bytes read, or -1 with the failing step in *step and its errno in *error. */
static double claim_read(instance_t *instance, int from_dir, const char *from_name, int to_dir,
                         const char *to_name, char *data, size_t capacity, int *step, int *error) {
  if (renameat(from_dir, from_name, to_dir, to_name) != 0) {
    *step = STEP_RENAME;
    *error = errno;
    return -1;
  }
  /* O_NONBLOCK: a FIFO must not block the consumer until a writer comes; O_NOFOLLOW: a symlink
   * must not make it read another file with its rights. Either is no message. */
  int fd = openat(to_dir, to_name, O_RDONLY | O_CLOEXEC | O_NONBLOCK | O_NOFOLLOW);
  if (fd < 0) {
    *step = errno == ELOOP ? STEP_NOT_REGULAR : STEP_OPEN;
    *error = errno;
    return -1;
  }
  struct stat st;
  if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
    close(fd);
    *step = STEP_NOT_REGULAR;
    *error = EINVAL;
    return -1;
  }
  size_t total = 0;
  while (total < capacity) {
    ssize_t count = pread(fd, data + total, capacity - total, (off_t)total);
    if (count < 0) {
      if (errno == EINTR) continue;
      *step = STEP_READ;
      *error = errno;
      close(fd);
      return -1;
    }
    total += (size_t)count;
    if (count == 0 || total < capacity) break;
  }
  instance->pending_fd = fd;
  return (double)total;
}

/* renameAndRead(fromPath, toPath, buffer): claim_read on two paths. Returns the bytes read or a
 * failure code. */
static napi_value rename_and_read(napi_env env, napi_callback_info info) {
  size_t argc = 3;
  napi_value argv[3];
  char from_path[PATH_BYTES_MAX];
  char to_path[PATH_BYTES_MAX];
  void *data = NULL;
  size_t capacity = 0;
  napi_get_cb_info(env, info, &argc, argv, NULL, NULL);
  if (argc < 3 || path_argument(env, argv[0], from_path) || path_argument(env, argv[1], to_path) ||
      napi_get_buffer_info(env, argv[2], &data, &capacity) != napi_ok)
    return failure(env, STEP_ARGUMENT, EINVAL);
  instance_t *instance = instance_of(env);
  close_pending(instance);
  int step = 0;
  int error = 0;
  double total = claim_read(instance, AT_FDCWD, from_path, AT_FDCWD, to_path, data, capacity, &step,
                            &error);
  return total < 0 ? failure(env, step, error) : number(env, total);
}

/* Copies a file name argument (one path component: no "/", not "." or "..") into out; 0 on
 * success. Names are resolved against a directory descriptor, so a "/" or ".." would reach
 * outside it. */
static int name_argument(napi_env env, napi_value value, char *out) {
  if (path_argument(env, value, out)) return -1;
  if (out[0] == '\0' || strchr(out, '/') != NULL) return -1;
  if (out[0] == '.' && (out[1] == '\0' || (out[1] == '.' && out[2] == '\0'))) return -1;
  return 0;
}

/* Reads a directory descriptor argument into *fd; 0 on success. */
static int dir_argument(napi_env env, napi_value value, int *fd) {
  int32_t number_value = -1;
  if (napi_get_value_int32(env, value, &number_value) != napi_ok || number_value < 0) return -1;
  *fd = number_value;
  return 0;
}

/* openDirectory(path): a descriptor of the directory at path for the *At calls (O_PATH where the
 * system has it: no read access is needed), or a failure code. A mailbox holds one for its inbox
 * and one for its claims, so that a claim's system calls resolve one name instead of the whole
 * path (docs/BUS.md, "Directory descriptors"). */
static napi_value open_directory(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value argv[1];
  char path[PATH_BYTES_MAX];
  napi_get_cb_info(env, info, &argc, argv, NULL, NULL);
  if (argc < 1 || path_argument(env, argv[0], path)) return failure(env, STEP_ARGUMENT, EINVAL);
#ifdef O_PATH
  int flags = O_PATH | O_DIRECTORY | O_CLOEXEC;
#else
  int flags = O_RDONLY | O_DIRECTORY | O_CLOEXEC;
#endif
  int fd = open(path, flags);
  return fd < 0 ? failure(env, STEP_OPEN, errno) : number(env, fd);
}

/* renameAndReadAt(fromDir, fromName, toDir, toName, buffer): claim_read relative to two directory
 * descriptors. Returns the bytes read or a failure code. */
static napi_value rename_and_read_at(napi_env env, napi_callback_info info) {
  size_t argc = 5;
  napi_value argv[5];
  char from_name[PATH_BYTES_MAX];
  char to_name[PATH_BYTES_MAX];
  int from_dir = -1;
  int to_dir = -1;
  void *data = NULL;
  size_t capacity = 0;
  napi_get_cb_info(env, info, &argc, argv, NULL, NULL);
  if (argc < 5 || dir_argument(env, argv[0], &from_dir) || name_argument(env, argv[1], from_name) ||
      dir_argument(env, argv[2], &to_dir) || name_argument(env, argv[3], to_name) ||
      napi_get_buffer_info(env, argv[4], &data, &capacity) != napi_ok)
    return failure(env, STEP_ARGUMENT, EINVAL);
  instance_t *instance = instance_of(env);
  close_pending(instance);
  int step = 0;
  int error = 0;
  double total = claim_read(instance, from_dir, from_name, to_dir, to_name, data, capacity, &step, &error);
  return total < 0 ? failure(env, step, error) : number(env, total);
}

/* unlinkAt(dir, name): removes the file name in the directory open as dir; 0 or a failure code. */
static napi_value unlink_at(napi_env env, napi_callback_info info) {
  size_t argc = 2;
  napi_value argv[2];
  char name[PATH_BYTES_MAX];
  int dir = -1;
  napi_get_cb_info(env, info, &argc, argv, NULL, NULL);
  if (argc < 2 || dir_argument(env, argv[0], &dir) || name_argument(env, argv[1], name))
    return failure(env, STEP_ARGUMENT, EINVAL);
  close_pending(instance_of(env));
  return unlinkat(dir, name, 0) == 0 ? number(env, 0) : failure(env, STEP_UNLINK, errno);
}

/* unlink(path): returns 0 or a failure code. */
static napi_value unlink_path(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value argv[1];
  char path[PATH_BYTES_MAX];
  napi_get_cb_info(env, info, &argc, argv, NULL, NULL);
  if (argc < 1 || path_argument(env, argv[0], path)) return failure(env, STEP_ARGUMENT, EINVAL);
  close_pending(instance_of(env));
  return unlink(path) == 0 ? number(env, 0) : failure(env, STEP_UNLINK, errno);
}

/* setIdleScheduling(tid): puts thread `tid` of this process under SCHED_IDLE, so that any normal
 * thread woken on its CPU preempts it at once (src/node/background-threads.ts). Linux only;
 * elsewhere a failure code with ENOSYS. Returns 0 or a failure code. */
static napi_value set_idle_scheduling(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value argv[1];
  napi_get_cb_info(env, info, &argc, argv, NULL, NULL);
  int32_t tid = 0;
  if (argc < 1 || napi_get_value_int32(env, argv[0], &tid) != napi_ok || tid <= 0)
    return failure(env, STEP_ARGUMENT, EINVAL);
#if defined(__linux__) && defined(SCHED_IDLE)
  struct sched_param param = {0};
  return sched_setscheduler((pid_t)tid, SCHED_IDLE, &param) == 0 ? number(env, 0)
                                                                 : failure(env, STEP_SCHEDULE, errno);
#else
  return failure(env, STEP_SCHEDULE, ENOSYS);
#endif
}

/* flush(): closes a descriptor still held from the last claim. */
static napi_value flush_pending(napi_env env, napi_callback_info info) {
  (void)info;
  close_pending(instance_of(env));
  return number(env, 0);
}

NAPI_MODULE_INIT() {
  instance_t *instance = calloc(1, sizeof(instance_t));
  if (instance == NULL) return NULL;
  instance->pending_fd = -1;
  if (napi_set_instance_data(env, instance, instance_free, NULL) != napi_ok) {
    free(instance);
    return NULL;
  }
  napi_property_descriptor properties[] = {
      {"writeAndRename", NULL, write_and_rename, NULL, NULL, NULL, napi_default, NULL},
      {"renameAndRead", NULL, rename_and_read, NULL, NULL, NULL, napi_default, NULL},
      {"openSpare", NULL, open_spare, NULL, NULL, NULL, napi_default, NULL},
      {"writeFdAndRename", NULL, write_fd_and_rename, NULL, NULL, NULL, napi_default, NULL},
      {"unlink", NULL, unlink_path, NULL, NULL, NULL, napi_default, NULL},
      {"openDirectory", NULL, open_directory, NULL, NULL, NULL, napi_default, NULL},
      {"renameAndReadAt", NULL, rename_and_read_at, NULL, NULL, NULL, napi_default, NULL},
      {"unlinkAt", NULL, unlink_at, NULL, NULL, NULL, napi_default, NULL},
      {"setIdleScheduling", NULL, set_idle_scheduling, NULL, NULL, NULL, napi_default, NULL},
      {"flush", NULL, flush_pending, NULL, NULL, NULL, napi_default, NULL},
  };
  napi_define_properties(env, exports, sizeof(properties) / sizeof(properties[0]), properties);
  return exports;
}
