/* A stand-in for libcuda.so.1 that answers the CUDA driver's checkpoint API as the driver
 * documents it (CUDA driver API, "CUDA Checkpointing", r570+), for unit tests of the
 * driver-API freezer. It holds a per-PID state machine
 *     running -lock-> locked -checkpoint-> checkpointed -restore-> locked -unlock-> running
 * and answers CUDA_ERROR_ILLEGAL_STATE for any other move, CUDA_ERROR_NOT_INITIALIZED before
 * cuInit, CUDA_ERROR_INVALID_VALUE for non-zero reserved fields, an unknown PID or a NULL
 * state pointer. Settings come from the environment when fake_reset() runs:
 *   FAKE_LIBCUDA_PIDS          comma-separated PIDs that are CUDA processes
 *   FAKE_LIBCUDA_LOG           file that gets one line per call
 *   FAKE_LIBCUDA_INIT_RESULT   what cuInit returns (default 0)
 *   FAKE_LIBCUDA_LOCK_RESULT   what a lock returns instead of succeeding (e.g. 909, timeout)
 *   FAKE_LIBCUDA_NEW_PID_STATE running, locked or checkpointed: a PID not in FAKE_LIBCUDA_PIDS
 *                              joins the table in that state when first asked about (a process
 *                              restored from a dump taken while checkpointed has a new PID);
 *                              unset (or another value), such a PID stays unknown
 * Built with -DNO_CHECKPOINT_API it exports only cuInit/cuDriverGetVersion/cuGetErrorName,
 * as an r550 driver does. */
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef int CUresult;

enum { RUNNING = 0, LOCKED = 1, CHECKPOINTED = 2 };

typedef struct {
	unsigned int timeoutMs;
	unsigned int reserved0;
	uint64_t reserved1[7];
} CUcheckpointLockArgs;

#define MAX_PIDS 64
static int pids[MAX_PIDS], states[MAX_PIDS], npids, initialized;
static int new_pid_state = -1; /* -1: an unknown PID stays unknown */

static void log_call(const char *fmt, ...)
{
	const char *path = getenv("FAKE_LIBCUDA_LOG");
	FILE *out;
	va_list ap;

	if (!path || !(out = fopen(path, "a")))
		return;
	va_start(ap, fmt);
	vfprintf(out, fmt, ap);
	va_end(ap);
	fputc('\n', out);
	fclose(out);
}

void fake_reset(void)
{
	const char *list = getenv("FAKE_LIBCUDA_PIDS");
	const char *fresh = getenv("FAKE_LIBCUDA_NEW_PID_STATE");
	char *copy, *tok, *save = NULL;

	npids = 0;
	initialized = 0;
	new_pid_state = -1;
	if (fresh && !strcmp(fresh, "running"))
		new_pid_state = RUNNING;
	else if (fresh && !strcmp(fresh, "locked"))
		new_pid_state = LOCKED;
	else if (fresh && !strcmp(fresh, "checkpointed"))
		new_pid_state = CHECKPOINTED;
	if (!list)
		return;
	copy = strdup(list);
	for (tok = strtok_r(copy, ",", &save); tok && npids < MAX_PIDS; tok = strtok_r(NULL, ",", &save)) {
		pids[npids] = atoi(tok);
		states[npids++] = RUNNING;
	}
	free(copy);
}

__attribute__((constructor)) static void load(void)
{
	fake_reset();
}

CUresult cuInit(unsigned int flags)
{
	const char *forced = getenv("FAKE_LIBCUDA_INIT_RESULT");

	log_call("cuInit %u", flags);
	if (forced && atoi(forced))
		return atoi(forced);
	initialized = 1;
	return 0;
}

CUresult cuDriverGetVersion(int *version)
{
	if (!version)
		return 1;
	*version = 12080;
	return 0;
}

CUresult cuGetErrorName(CUresult error, const char **name)
{
	switch (error) {
	case 0: *name = "CUDA_SUCCESS"; return 0;
	case 1: *name = "CUDA_ERROR_INVALID_VALUE"; return 0;
	case 3: *name = "CUDA_ERROR_NOT_INITIALIZED"; return 0;
	case 100: *name = "CUDA_ERROR_NO_DEVICE"; return 0;
	case 401: *name = "CUDA_ERROR_ILLEGAL_STATE"; return 0;
	case 909: *name = "CUDA_ERROR_TIMEOUT"; return 0;
	}
	*name = NULL;
	return 1;
}

#ifndef NO_CHECKPOINT_API
static int slot(int pid)
{
	for (int i = 0; i < npids; i++)
		if (pids[i] == pid)
			return i;
	if (new_pid_state < 0 || pid <= 0 || npids >= MAX_PIDS)
		return -1;
	log_call("new pid %d state %d", pid, new_pid_state);
	pids[npids] = pid;
	states[npids] = new_pid_state;
	return npids++;
}

static CUresult move(const char *call, int pid, int from, int to)
{
	int i = slot(pid);

	if (!initialized)
		return 3;
	if (i < 0)
		return 1;
	if (states[i] != from) {
		log_call("%s %d illegal-state %d", call, pid, states[i]);
		return 401;
	}
	states[i] = to;
	return 0;
}

static int zero(const uint64_t *words, int n)
{
	for (int i = 0; i < n; i++)
		if (words[i])
			return 0;
	return 1;
}

CUresult cuCheckpointProcessGetState(int pid, int *state)
{
	int i = slot(pid);

	if (!initialized)
		return 3;
	if (i < 0 || !state)
		return 1;
	*state = states[i];
	return 0;
}

CUresult cuCheckpointProcessLock(int pid, CUcheckpointLockArgs *args)
{
	const char *forced = getenv("FAKE_LIBCUDA_LOCK_RESULT");

	log_call("lock %d timeoutMs=%u", pid, args ? args->timeoutMs : 0);
	if (args && (args->reserved0 || !zero(args->reserved1, 7)))
		return 1;
	if (forced && atoi(forced))
		return atoi(forced);
	return move("lock", pid, RUNNING, LOCKED);
}

CUresult cuCheckpointProcessCheckpoint(int pid, const uint64_t *args)
{
	log_call("checkpoint %d", pid);
	if (args && !zero(args, 8))
		return 1;
	return move("checkpoint", pid, LOCKED, CHECKPOINTED);
}

CUresult cuCheckpointProcessRestore(int pid, const uint64_t *args)
{
	log_call("restore %d", pid);
	if (args && !zero(args, 8))
		return 1;
	return move("restore", pid, CHECKPOINTED, LOCKED);
}

CUresult cuCheckpointProcessUnlock(int pid, const uint64_t *args)
{
	log_call("unlock %d", pid);
	if (args && !zero(args, 8))
		return 1;
	return move("unlock", pid, LOCKED, RUNNING);
}
#endif
