/*  imgp_mem — see imgp_mem.h.

    Stacks. A thread's stack bounds come from pthread_getattr_np once per
    thread (glibc reports the usable range, above the guard page) and are
    kept in thread-local storage. The range trimmed ends on the page
    boundary at or below S_STACK_MARGIN bytes under a local of
    imgp_mem_stack_trim's own frame, so the call into madvise (its return
    address, the wrapper's frame) stays on pages left alone; whatever lies
    further down is dead. A signal handler run after the call (imgp_watch's
    SIGURG) and a page used again later simply get fresh zero pages.

    Heap. The trimmer (an imgp_ticker) wakes every S_TICK_MS; when
    imgp_mem_served moved since its last trim, it trims once no request has
    ended for quiet_ms, or when busy_ms passed since the last trim.
    malloc_trim(0) walks every arena under that arena's lock, one at a
    time; with a handful of arenas that is a fraction of a millisecond,
    once per burst.
*/
#include "imgp_mem.h"

#include <assert.h>
#include <czmq.h>
#include <malloc.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <unistd.h>

#include "imgp_log.h"
#include "imgp_ticker.h"

#define S_MMAP_THRESHOLD (128 * 1024)   //  allocations above go to mmap: upload buffers
#define S_ARENAS_PER_CORE 2     //  malloc arenas per core (glibc's default is 8)
#define S_TICK_MS 250           //  the trimmer looks this often
#define S_STACK_MARGIN 512      //  bytes below our frame left alone: madvise's own call

struct _imgp_mem_t {
    imgp_ticker_t *ticker;      //  the trimmer: calls s_trim_tick
    int quiet_ms;               //  trim after this long with no request ended
    int busy_ms;                //  or this long after the last trim, while busy
    atomic_uint_fast64_t served;    //  requests ended, ever
    atomic_uint_fast64_t trims; //  malloc_trim calls, ever
    uint_fast64_t seen;         //  served at the trimmer's last look (its thread only)
    bool pending;               //  requests ended since the last trim (its thread only)
    int64_t last_end;           //  when served last moved (its thread only)
    int64_t last_trim;          //  when it last trimmed (its thread only)
};

//  The calling thread's lowest usable stack address; 0 until looked up,
//  1 when it cannot be known (the stack is then never trimmed).
static _Thread_local uintptr_t s_stack_low;

void
imgp_mem_tune (void)
{
    //  An upload buffer is one allocation that grows to the upload's size,
    //  made on whichever of thousands of threads took the request. glibc's
    //  dynamic mmap threshold rises to the largest block freed, so after a
    //  few 30 MB uploads they came from the arenas, which kept the memory
    //  (356 MB after 14 uploads). A fixed threshold keeps large blocks in
    //  mmap, given back to the system when freed (and grown by mremap,
    //  without a copy).
    mallopt (M_MMAP_THRESHOLD, S_MMAP_THRESHOLD);
    //  Each arena keeps its own free memory; thousands of threads that
    //  each malloc a little per request need no more arenas than can run
    //  at once.
    long cores = sysconf (_SC_NPROCESSORS_ONLN);
    mallopt (M_ARENA_MAX, (int) (cores > 0 ? cores : 1) * S_ARENAS_PER_CORE);
}

static uintptr_t
s_stack_find (void)
{
    pthread_attr_t attr;
    void *addr = NULL;
    size_t size = 0;
    if (pthread_getattr_np (pthread_self (), &attr))
        return 1;
    int rc = pthread_attr_getstack (&attr, &addr, &size);
    pthread_attr_destroy (&attr);
    return rc == 0 && addr ? (uintptr_t) addr : 1;
}

__attribute__ ((noinline)) size_t
imgp_mem_stack_trim (void)
{
    if (s_stack_low == 0)
        s_stack_low = s_stack_find ();
    if (s_stack_low == 1)
        return 0;
    uintptr_t page = (uintptr_t) sysconf (_SC_PAGESIZE);
    volatile char here = 0;     //  a byte of this frame: the trim ends below it
    uintptr_t low = (s_stack_low + page - 1) & ~(page - 1);
    uintptr_t end = ((uintptr_t) &here - S_STACK_MARGIN) & ~(page - 1);
    if (end <= low)
        return 0;               //  nothing below the frame
    if (madvise ((void *) low, end - low, MADV_DONTNEED))
        return 0;
    return end - low;
}

//  One tick of the trimmer: trim once things are quiet after requests,
//  or every busy_ms while they never are.
static void
s_trim_tick (void *args)
{
    imgp_mem_t *self = args;
    int64_t now = zclock_mono ();
    uint_fast64_t served = atomic_load (&self->served);
    if (served != self->seen) {
        self->seen = served;
        self->pending = true;
        self->last_end = now;
    }
    if (self->pending
    &&  (now - self->last_end >= self->quiet_ms || now - self->last_trim >= self->busy_ms)) {
        malloc_trim (0);
        atomic_fetch_add (&self->trims, 1);
        self->pending = false;
        self->last_trim = zclock_mono ();
        imgp_debug ("event=malloc_trim ms=%lld", (long long) (self->last_trim - now));
    }
}

imgp_mem_t *
imgp_mem_new (int quiet_ms, int busy_ms)
{
    assert (quiet_ms > 0 && busy_ms > 0);
    imgp_mem_t *self = calloc (1, sizeof *self);
    if (!self)
        return NULL;
    self->quiet_ms = quiet_ms;
    self->busy_ms = busy_ms;
    atomic_init (&self->served, 0);
    atomic_init (&self->trims, 0);
    self->last_trim = zclock_mono ();
    self->ticker = imgp_ticker_new ("heap_trim", S_TICK_MS, s_trim_tick, self);
    if (!self->ticker)
        imgp_mem_destroy (&self);
    return self;
}

void
imgp_mem_destroy (imgp_mem_t **self_p)
{
    if (!self_p || !*self_p)
        return;
    imgp_mem_t *self = *self_p;
    imgp_ticker_destroy (&self->ticker);
    free (self);
    *self_p = NULL;
}

void
imgp_mem_served (imgp_mem_t *self)
{
    assert (self);
    atomic_fetch_add_explicit (&self->served, 1, memory_order_relaxed);
}

uint64_t
imgp_mem_trims (imgp_mem_t *self)
{
    assert (self);
    return atomic_load (&self->trims);
}
