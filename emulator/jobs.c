/* jobs.c - named job queues, one worker thread each (jobs.h).
 *
 * Locks: the runner's lock guards the list of queues, the count of pending
 * jobs and shutting_down; each queue's lock guards its jobs, the job being
 * run and the meaning of its cancel flag.  The order is always runner, then
 * queue.  A worker whose queue is empty and that holds nothing leaves and
 * frees its queue (taking the runner's lock first, so no job slips in
 * between the check and the exit); threads exist only for queues with work
 * or something held. */
#include "jobs.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "xalloc.h"

struct emu_worker_private {
  struct emu_jobs *runner;
  pthread_t thread;
  pthread_mutex_t lock;
  pthread_cond_t cond;
  struct emu_job *head, *tail;
  struct emu_job *running;         /* the job being run, or NULL */
  bool quit;                       /* emulator shutdown */
  struct emu_worker *next;
};

struct emu_jobs {
  struct kiln_emu *emu;
  void (*release) (struct emu_worker *w);
  pthread_mutex_t lock;
  struct emu_worker *workers;
  bool shutting_down;
  unsigned long pending;           /* jobs queued or running, all queues */
  pthread_cond_t idle;             /* signalled when pending drops */
};

static void
job_free (struct emu_job *j)
{
  free (j->arg[0]);
  free (j->arg[1]);
  free (j);
}

static void
jobs_free (struct emu_job *j)
{
  while (j)
    {
      struct emu_job *next = j->next;
      job_free (j);
      j = next;
    }
}

static void
worker_free (struct emu_worker *w)
{
  jobs_free (w->priv->head);
  pthread_mutex_destroy (&w->priv->lock);
  pthread_cond_destroy (&w->priv->cond);
  free (w->priv);
  free ((char *) w->queue);
  free (w);
}

/* Takes the worker out of the runner when it has nothing to do and holds
 * nothing; true when it is gone (freed). */
static bool
worker_leaves (struct emu_worker *w)
{
  struct emu_jobs *r = w->priv->runner;
  pthread_mutex_lock (&r->lock);
  if (r->shutting_down)
    {
      /* emu_jobs_shutdown owns the list now and joins this thread. */
      pthread_mutex_unlock (&r->lock);
      return false;
    }
  pthread_mutex_lock (&w->priv->lock);
  bool leave = w->priv->head == NULL && w->held == NULL;
  if (leave)
    for (struct emu_worker **p = &r->workers; *p; p = &(*p)->priv->next)
      if (*p == w)
        {
          *p = w->priv->next;
          break;
        }
  pthread_mutex_unlock (&w->priv->lock);
  pthread_mutex_unlock (&r->lock);
  if (leave)
    {
      pthread_detach (w->priv->thread);
      worker_free (w);
    }
  return leave;
}

static void *
worker_main (void *opaque)
{
  struct emu_worker *w = opaque;
  struct emu_worker_private *p = w->priv;
  for (;;)
    {
      pthread_mutex_lock (&p->lock);
      while (p->head == NULL && !p->quit)
        pthread_cond_wait (&p->cond, &p->lock);
      if (p->quit)
        {
          pthread_mutex_unlock (&p->lock);
          break;
        }
      struct emu_job *j = p->head;
      p->head = j->next;
      if (p->head == NULL)
        p->tail = NULL;
      if (!j->kind->keeps_cancel)
        w->cancel = 0;
      p->running = j;
      pthread_mutex_unlock (&p->lock);

      j->kind->run (w, j);

      pthread_mutex_lock (&p->lock);
      p->running = NULL;
      bool idle = p->head == NULL && w->held == NULL;
      pthread_mutex_unlock (&p->lock);
      job_free (j);
      pthread_mutex_lock (&p->runner->lock);
      p->runner->pending--;
      pthread_cond_broadcast (&p->runner->idle);
      pthread_mutex_unlock (&p->runner->lock);
      if (idle && worker_leaves (w))
        return NULL;
    }
  if (w->held && p->runner->release)
    p->runner->release (w);
  return NULL;
}

/* The worker of a queue, or NULL.  Call with the runner's lock held. */
static struct emu_worker *
worker_find (struct emu_jobs *r, const char *queue)
{
  for (struct emu_worker *w = r->workers; w; w = w->priv->next)
    if (strcmp (w->queue, queue) == 0)
      return w;
  return NULL;
}

void
emu_jobs_init (struct kiln_emu *emu, void (*release) (struct emu_worker *w))
{
  struct emu_jobs *r = kiln_xcalloc (1, sizeof *r);
  r->emu = emu;
  r->release = release;
  pthread_mutex_init (&r->lock, NULL);
  pthread_cond_init (&r->idle, NULL);
  emu->jobs = r;
}

void
emu_jobs_queue (struct kiln_emu *emu, const char *queue, const struct emu_job_kind *kind, const char *arg0,
                const char *arg1, bool flag)
{
  struct emu_jobs *r = emu->jobs;
  if (r == NULL)
    return;
  struct emu_job *j = kiln_xcalloc (1, sizeof *j);
  j->kind = kind;
  j->arg[0] = arg0 ? kiln_xstrdup (arg0) : NULL;
  j->arg[1] = arg1 ? kiln_xstrdup (arg1) : NULL;
  j->flag = flag;
  struct emu_job *dropped = NULL;

  pthread_mutex_lock (&r->lock);
  if (r->shutting_down)
    {
      pthread_mutex_unlock (&r->lock);
      job_free (j);
      return;
    }
  struct emu_worker *w = worker_find (r, queue);
  if (w == NULL)
    {
      w = kiln_xcalloc (1, sizeof *w);
      w->emu = emu;
      w->queue = kiln_xstrdup (queue);
      w->priv = kiln_xcalloc (1, sizeof *w->priv);
      w->priv->runner = r;
      pthread_mutex_init (&w->priv->lock, NULL);
      pthread_cond_init (&w->priv->cond, NULL);
      if (pthread_create (&w->priv->thread, NULL, worker_main, w) != 0)
        abort ();
      w->priv->next = r->workers;
      r->workers = w;
    }
  struct emu_worker_private *p = w->priv;
  pthread_mutex_lock (&p->lock);
  if (kind->clears_queue)
    {
      w->cancel = 1;
      dropped = p->head;
      p->head = p->tail = NULL;
      for (struct emu_job *d = dropped; d; d = d->next)
        r->pending--;
    }
  r->pending++;
  if (p->tail)
    p->tail->next = j;
  else
    p->head = j;
  p->tail = j;
  pthread_cond_broadcast (&p->cond);
  pthread_mutex_unlock (&p->lock);
  pthread_mutex_unlock (&r->lock);

  for (struct emu_job *d = dropped; d; d = d->next)
    if (d->kind->dropped)
      d->kind->dropped (emu, queue, d);
  jobs_free (dropped);
}

bool
emu_jobs_cancel_running (struct kiln_emu *emu, const char *queue, const struct emu_job_kind *kind, const char *arg0)
{
  struct emu_jobs *r = emu->jobs;
  bool raised = false;
  if (r == NULL)
    return false;
  pthread_mutex_lock (&r->lock);
  struct emu_worker *w = worker_find (r, queue);
  if (w)
    {
      pthread_mutex_lock (&w->priv->lock);
      struct emu_job *j = w->priv->running;
      if (j && j->kind == kind && j->arg[0] && strcmp (j->arg[0], arg0) == 0)
        {
          w->cancel = 1;
          raised = true;
        }
      pthread_mutex_unlock (&w->priv->lock);
    }
  pthread_mutex_unlock (&r->lock);
  return raised;
}

bool
emu_worker_take_cancel (struct emu_worker *w)
{
  pthread_mutex_lock (&w->priv->lock);
  bool cancelled = w->cancel != 0;
  w->cancel = 0;
  pthread_mutex_unlock (&w->priv->lock);
  return cancelled;
}

bool
emu_worker_quitting (struct emu_worker *w)
{
  pthread_mutex_lock (&w->priv->lock);
  bool quit = w->priv->quit;
  pthread_mutex_unlock (&w->priv->lock);
  return quit;
}

void
emu_jobs_wait_idle (struct kiln_emu *emu)
{
  struct emu_jobs *r = emu->jobs;
  if (r == NULL)
    return;
  pthread_mutex_lock (&r->lock);
  while (r->pending > 0 && !r->shutting_down)
    pthread_cond_wait (&r->idle, &r->lock);
  pthread_mutex_unlock (&r->lock);
}

void
emu_jobs_shutdown (struct kiln_emu *emu)
{
  struct emu_jobs *r = emu->jobs;
  if (r == NULL)
    return;
  pthread_mutex_lock (&r->lock);
  r->shutting_down = true;
  pthread_cond_broadcast (&r->idle);
  struct emu_worker *workers = r->workers;
  r->workers = NULL;
  pthread_mutex_unlock (&r->lock);
  for (struct emu_worker *w = workers; w; w = w->priv->next)
    {
      pthread_mutex_lock (&w->priv->lock);
      w->priv->quit = true;
      w->cancel = 1;
      pthread_cond_broadcast (&w->priv->cond);
      pthread_mutex_unlock (&w->priv->lock);
    }
  while (workers)
    {
      struct emu_worker *w = workers;
      workers = w->priv->next;
      pthread_join (w->priv->thread, NULL);
      worker_free (w);
    }
  pthread_mutex_destroy (&r->lock);
  pthread_cond_destroy (&r->idle);
  free (r);
  emu->jobs = NULL;
}
