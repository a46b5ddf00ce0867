/*  imgp_watch — cuts off the blocking reads of a thread that is past its
    deadline, so the upload deadline holds against a client that sends a
    byte now and then.

    Why: civetweb 1.15's mg_read returns only when it has every byte it was
    asked for, or when request_timeout_ms passed with no byte at all
    (pull_all loops until then). A client that sends one byte every few
    seconds keeps a single read, ours or the one inside
    mg_handle_form_request, going for as long as it likes, so a deadline
    checked between reads is never looked at. civetweb hands out no socket
    to shut down, but its mg_poll passes poll()'s EINTR up as a read error:
    so a watcher thread sends each watched thread that is past its deadline
    a signal (SIGURG, caught by an empty handler without SA_RESTART), and
    again every tick until the thread stops watching, in case one landed
    just before poll() was entered.

    Never: signal a thread outside its begin/end (a slot is cleared under
    the lock the watcher signals under), or install a handler for any other
    signal. SIGURG is ignored by default, so a stray one harms nothing.
*/
#ifndef IMGP_WATCH_H_INCLUDED
#define IMGP_WATCH_H_INCLUDED

#include <stddef.h>
#include <stdint.h>

typedef struct _imgp_watch_t imgp_watch_t;

//  Start a watcher for up to `slots` threads at once (one per HTTP worker
//  thread). Installs the SIGURG handler for the process. Returns NULL when
//  the thread cannot be started (reason logged).
imgp_watch_t *imgp_watch_new (size_t slots);

//  Stop the watcher. Safe on NULL and twice.
void imgp_watch_destroy (imgp_watch_t **self_p);

//  Watch the calling thread: once zclock_mono() passes `deadline` (ms), its
//  blocking socket waits fail with EINTR until imgp_watch_end. Returns the
//  slot to end with, or -1 when every slot is taken (then it is not
//  watched, and the reason is logged).
int imgp_watch_begin (imgp_watch_t *self, int64_t deadline);

//  Stop watching the thread of `slot` (-1 is ignored). After this returns
//  the watcher sends it nothing more.
void imgp_watch_end (imgp_watch_t *self, int slot);

#endif
