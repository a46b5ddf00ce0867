/*  imgp_signal — how every imgpipe program takes SIGINT, SIGTERM (and, in
    the frontend, SIGHUP): blocked in every thread, taken by one sigwait.

    Why: a handler that runs in whatever thread the kernel picks makes
    socket calls fail with EINTR at random, and a signal that comes before
    the handler is installed kills the program with exit 143 while it is
    still reading its flags. So the first statement of main() blocks the
    signals (every thread made later, libzmq's, civetweb's, libvips',
    inherits the mask), czmq is told to install no handler of its own, and
    the program takes the signals where it chooses, with imgp_signal_wait.
    Shutdown then has one path in each program.

    Never: install a signal handler, or block the signals in one thread
    only.
*/
#ifndef IMGP_SIGNAL_H_INCLUDED
#define IMGP_SIGNAL_H_INCLUDED

#include <signal.h>
#include <stdbool.h>

//  Block SIGINT and SIGTERM, and SIGHUP too when `hangup` (a program that
//  reloads on SIGHUP), in the calling thread and every thread it makes
//  after; switch czmq's own handler off. `signals` gets the set for
//  imgp_signal_wait. Call it first thing in main().
void imgp_signal_block (sigset_t *signals, bool hangup);

//  Wait for one of `signals` and return its number (SIGINT, SIGTERM or
//  SIGHUP). Returns at once when one is pending already.
int imgp_signal_wait (const sigset_t *signals);

//  "SIGINT", "SIGTERM", "SIGHUP" (or "signal" for another), for logs.
const char *imgp_signal_name (int signal);

#endif
