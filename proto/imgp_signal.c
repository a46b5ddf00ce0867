/*  imgp_signal — see imgp_signal.h. */
#include "imgp_signal.h"

#include <assert.h>
#include <czmq.h>
#include <pthread.h>

void
imgp_signal_block (sigset_t *signals, bool hangup)
{
    sigemptyset (signals);
    sigaddset (signals, SIGINT);
    sigaddset (signals, SIGTERM);
    if (hangup)
        sigaddset (signals, SIGHUP);
    pthread_sigmask (SIG_BLOCK, signals, NULL);
    //  zsys_init would otherwise install its SIGINT/SIGTERM handler.
    zsys_handler_set (NULL);
}

int
imgp_signal_wait (const sigset_t *signals)
{
    int signal = 0;
    //  sigwait fails only on a bad set, which imgp_signal_block never
    //  makes, and glibc's restarts itself after EINTR.
    int rc = sigwait (signals, &signal);
    assert (rc == 0);
    return signal;
}

const char *
imgp_signal_name (int signal)
{
    return signal == SIGINT ? "SIGINT" : signal == SIGTERM ? "SIGTERM"
         : signal == SIGHUP ? "SIGHUP" : "signal";
}
