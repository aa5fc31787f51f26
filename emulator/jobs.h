/* jobs.h - kiln-emulator's background work: the machinery, not the meaning.
 *
 * Handlers never wait for slow work (a guest booting, a disk captured, a
 * command run, an image converted).  They record the state the API reports
 * at once and queue a job here.  Jobs live in named queues (an instance's
 * id, or a name such as "vm-tasks"); each queue with work has one worker
 * thread that runs its jobs in order, so an instance's boot, commands and
 * capture never overlap.  What a job means belongs to the service that
 * queues it: a job kind (struct emu_job_kind, filled by field name, as the
 * service table is) says how to run it and what to record when it is
 * dropped unrun.  The VM host's lifecycle kinds are in vmhost.c, capture in
 * ec2/ec2_capture.c, SSM's command runs in ssm/ssm_run.c, VM import/export
 * in ec2/ec2_import.c.
 *
 * Restart recovery is each owner's: the database holds every job's intent,
 * so at start the VM host and the services' start slots (services.h) bring
 * rows an earlier run left behind to a clear state and queue again what
 * should run again.  Jobs still queued at shutdown are forgotten for that
 * reason.
 *
 * A worker may keep something between its queue's jobs (the VM host keeps
 * the instance's guest in `held`); it stays while it does, and at shutdown
 * the runner's release callback lets it go. */
#ifndef KILN_EMULATOR_JOBS_H
#define KILN_EMULATOR_JOBS_H

#include <signal.h>
#include <stdbool.h>

#include "emulator.h"

struct emu_worker;
struct emu_job;

struct emu_job_kind {
  const char *name;    /* for logs */
  /* Runs the job in its queue's worker; w->cancel is raised when it should
   * give up what it waits on. */
  void (*run) (struct emu_worker *w, const struct emu_job *job);
  /* Optional: records that the job will never run (a clears_queue job
   * dropped it).  Called in the queueing thread, with no runner lock held. */
  void (*dropped) (struct kiln_emu *emu, const char *queue, const struct emu_job *job);
  /* Queueing it raises the cancel flag of the queue's worker and drops
   * every job still waiting (terminating an instance). */
  bool clears_queue;
  /* Runs with the cancel flag as it stands rather than lowered first: a
   * cancel raised while it waited its turn still applies (a command popped
   * just as its instance is terminated must not start). */
  bool keeps_cancel;
};

struct emu_job {
  const struct emu_job_kind *kind;
  char *arg[2];        /* the kind's arguments (ids), NULL when unused */
  bool flag;           /* the kind's option (stop: force; capture: no reboot) */
  struct emu_job *next;
};

/* A queue's worker, as a job's run sees it. */
struct emu_worker {
  struct kiln_emu *emu;
  const char *queue;               /* the queue's name */
  volatile sig_atomic_t cancel;    /* interrupts the current wait */
  /* What the queue's jobs keep between them (the VM host: the guest).  Only
   * the worker's thread touches it; the worker stays while it is set. */
  void *held;
  struct emu_worker_private *priv;
};

/* Starts the runner.  release, when not NULL, lets go of a worker's held
 * resource at shutdown (in the worker's thread). */
void emu_jobs_init (struct kiln_emu *emu, void (*release) (struct emu_worker *w));
/* Stops every worker (raising its cancel flag), waits for them, forgets
 * queued jobs; safe when not started. */
void emu_jobs_shutdown (struct kiln_emu *emu);

/* Queues a job of kind on queue (arguments copied).  Nothing happens once
 * the runner is shutting down. */
void emu_jobs_queue (struct kiln_emu *emu, const char *queue, const struct emu_job_kind *kind, const char *arg0,
                     const char *arg1, bool flag);
/* Raises the cancel flag of queue's worker if the job it runs is of kind
 * with arg[0] equal to arg0; true when it did. */
bool emu_jobs_cancel_running (struct kiln_emu *emu, const char *queue, const struct emu_job_kind *kind,
                              const char *arg0);
/* In a job: reads and lowers the worker's cancel flag, atomically with
 * emu_jobs_cancel_running. */
bool emu_worker_take_cancel (struct emu_worker *w);
/* In a job: the emulator is stopping (the job was interrupted for that). */
bool emu_worker_quitting (struct emu_worker *w);

/* Blocks until no job is queued or running (tests: the state a request
 * sees after others is then deterministic). */
void emu_jobs_wait_idle (struct kiln_emu *emu);

#endif
