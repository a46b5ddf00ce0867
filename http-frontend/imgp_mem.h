/*  imgp_mem — keeps the frontend's memory at its idle size plus the
    uploads in flight: malloc settings made once at start, each worker
    thread's stack given back when it starts and after each connection,
    and heap memory given back once a burst is over.

    Why: the frontend runs thousands of civetweb worker threads (one per
    open connection). What each one holds is paid thousands of times, and
    what a burst leaves behind stays unless something hands it back.
    Measured at 4096 threads before this module: RSS 97 MB idle, 128 MB
    after 2000 connections and a burst of 416 uploads, for good.
    - a thread's stack: civetweb 1.15 (Debian) maps 100 kB per worker; an
      idle worker had touched 3 pages (12 kB: glibc's thread descriptor
      and TLS, frames, and a page of zeros that vfprintf's stack probe
      touched when civetweb named the thread). A connection touches more
      (civetweb's request path reaches 8 pages), and those pages stayed
      resident for the thread's life: stacks went 48 -> 71 MB.
      imgp_mem_stack_trim, called on the worker's own thread from
      civetweb's init_thread and connection_close callbacks, hands the
      pages below the caller's frame back (MADV_DONTNEED): an idle worker
      holds 2 pages, before and after any number of connections;
    - heap: glibc gives each thread one of up to 8 arenas per core, and an
      arena keeps what it frees in its own bins (arenas went 17.6 -> 24.5
      MB). imgp_mem_new starts a trimmer that calls malloc_trim(0) once
      the frontend has been quiet for a moment after serving requests (and
      every few seconds while it never is), which unmaps the free pages of
      every arena; imgp_mem_tune caps the arenas at 2 per core;
    - upload buffers (one allocation each, up to --max-upload-bytes) go to
      mmap above a fixed threshold (M_MMAP_THRESHOLD), so freeing one gives
      it back to the system at once; glibc's default threshold rises to
      the largest block freed, after which 30 MB uploads came from the
      arenas and stayed (356 MB after 14 uploads in issue 8).
    What this module cannot cut: per worker civetweb's request buffer
    (max_request_size, 16 kB: the page with malloc's header is resident,
    4 kB, and a worker that took an upload has it filled by its first
    read) and its connection struct (2.4 kB). An idle worker costs about
    15 kB in all (see --threads).

    Never: trim a stack from another thread (only the caller's own stack,
    below its own frame, is known to be dead), or call malloc_trim on a
    request's path.
*/
#ifndef IMGP_MEM_H_INCLUDED
#define IMGP_MEM_H_INCLUDED

#include <stddef.h>
#include <stdint.h>

typedef struct _imgp_mem_t imgp_mem_t;

//  Set the process's malloc options (mmap threshold for upload buffers,
//  arena count). Call once, before the worker threads start.
void imgp_mem_tune (void);

//  Start the trimmer: after requests were served (imgp_mem_served), once
//  `quiet_ms` pass with none, or every `busy_ms` while they keep coming,
//  it calls malloc_trim(0). Returns NULL when the thread cannot be
//  started (logged).
imgp_mem_t *imgp_mem_new (int quiet_ms, int busy_ms);

//  Stop the trimmer. Safe on NULL and twice.
void imgp_mem_destroy (imgp_mem_t **self_p);

//  A request was served (any thread; one atomic add): memory may be free
//  to give back once things are quiet.
void imgp_mem_served (imgp_mem_t *self);

//  Times malloc_trim ran (for tests).
uint64_t imgp_mem_trims (imgp_mem_t *self);

//  Give back the pages of the calling thread's stack below the caller's
//  frame (they hold only dead frames). Cheap when there are none: one
//  madvise over the thread's stack. Returns the bytes the range covered
//  (0 when nothing lay below the frame, or the stack is unknown).
size_t imgp_mem_stack_trim (void);

#endif
