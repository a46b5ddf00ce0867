/*  imgpipe-resizer — asks the broker for thumbnail jobs, runs libvips,
    sends results back on the same connection. Start one per core, on any host that reaches the
    broker; stop any of them at any time.

    This file only reads options (one imgp_conf_start into s_config_t) and
    wires imgp_thumb (libvips) to imgp_resizer (the actor that serves); it
    never touches sockets or pixels. Order matters: signals are blocked
    first (imgp_signal), so a SIGTERM while flags are read or libvips loads
    waits instead of killing us with 143; the priority is lowered before
    czmq or libvips start a thread, so every thread inherits it. Then, as
    in imgpipe-broker: imgp_resizer_new, wait for the signal,
    imgp_resizer_destroy (the job in hand is finished and its result sent).
*/
#include <czmq.h>
#include <signal.h>
#include <stdbool.h>
#include <stdlib.h>

#include "imgp_conf.h"
#include "imgp_defaults.h"
#include "imgp_log.h"
#include "imgp_resizer.h"
#include "imgp_signal.h"
#include "imgp_thumb.h"

//  Everything the options set, so one table fills it.
typedef struct {
    imgp_thumb_config_t thumb;      //  libvips limits and loaders
    imgp_resizer_config_t resizer;  //  endpoint, name, heartbeat, keys
    int nice;                       //  CPU priority to drop to, 0 = leave it
} s_config_t;

static const imgp_conf_spec_t s_specs [] = {
    IMGP_CONF_JOBS (s_config_t, resizer.jobs),
    IMGP_CONF_STR (s_config_t, resizer.curve_secret, "curve-secret", "",
                   "our CURVE certificate, the _secret file of `imgpipe keygen` (with "
                   "--curve-server; empty: a plain link)"),
    IMGP_CONF_STR (s_config_t, resizer.curve_server, "curve-server", "",
                   "the broker's public CURVE certificate (with --curve-secret)"),
    IMGP_CONF_STR (s_config_t, resizer.name, "name", "",
                   "worker name prefix in messages and logs (default <hostname>-<pid>); a "
                   "random suffix is added so each process is a new worker to the broker"),
    IMGP_CONF_NUM (s_config_t, thumb.max_pixels, "max-pixels", 100000000, 1, 1000000000000LL,
                   "largest width x height decoded; bigger fails too_many_pixels"),
    IMGP_CONF_MAX_UPLOAD_BYTES (s_config_t, resizer.max_upload_bytes),
    IMGP_CONF_NUM (s_config_t, resizer.heartbeat_ms, "heartbeat-ms", 1000, 10, 600000,
                   "heartbeat interval in milliseconds"),
    IMGP_CONF_NUM (s_config_t, thumb.vips_threads, "vips-threads", 1, 1, 256,
                   "libvips worker threads per image; keep 1 and run one resizer per core "
                   "(2 measured no faster, with more memory)"),
    IMGP_CONF_ALLOW_LOADERS (s_config_t, thumb.allow_loaders),
    IMGP_CONF_NUM (s_config_t, thumb.time_limit_ms, "time-limit-ms", 30000, 1, 86400000,
                   "time one image may take before it fails with timeout; keep it below "
                   "the broker's --job-timeout-ms"),
    IMGP_CONF_FLAG (s_config_t, thumb.dry_run, "dry-run",
                    "benchmarks only: resize nothing, answer every job with a fixed 1x1 image "
                    "in its format, to measure what the broker routes"),
    IMGP_CONF_NUM (s_config_t, nice, "nice", 10, 0, 19,
                   "CPU priority to drop to (nice value, also SCHED_BATCH) so a frontend "
                   "on the same host stays quick; 0 leaves the priority alone"),
    IMGP_CONF_END
};

//  One of `signals` already waiting (it came while libvips loaded).
static bool
s_signal_pending (const sigset_t *signals)
{
    sigset_t pending;
    if (sigpending (&pending) != 0)
        return false;
    for (int signal = 1; signal < NSIG; signal++)
        if (sigismember (signals, signal) == 1 && sigismember (&pending, signal) == 1)
            return true;
    return false;
}

//  Serve until SIGINT or SIGTERM. Stopped before we started: connect
//  nothing, so the broker never counts us. Returns 0, or -1 when the
//  resizer could not start (reason logged).
static int
s_serve (const imgp_resizer_config_t *config, const sigset_t *signals)
{
    imgp_resizer_t *resizer = NULL;
    if (!s_signal_pending (signals)) {
        resizer = imgp_resizer_new (config);
        if (!resizer)
            return -1;
    }
    int signal = imgp_signal_wait (signals);
    imgp_info ("event=stopping signal=%s", imgp_signal_name (signal));
    imgp_resizer_destroy (&resizer);    //  ends the job in hand, logs event=stopped
    return 0;
}

int
main (int argc, char **argv)
{
    sigset_t signals;
    imgp_signal_block (&signals, false);
    s_config_t config = { 0 };
    int exit_code;
    imgp_conf_t *conf = imgp_conf_start ("imgpipe-resizer",
                                         "Makes thumbnails for imgpipe: takes jobs from the "
                                         "broker, runs libvips, sends results back.",
                                         s_specs, argc, argv, &config, &exit_code);
    if (!conf)
        return exit_code;
    imgp_resizer_set_priority (config.nice);     //  a failure is only a warning
    zsys_init ();

    int rc = imgp_thumb_init (&config.thumb);
    if (rc == 0)
        rc = s_serve (&config.resizer, &signals);
    imgp_conf_destroy (&conf);
    return rc == 0 ? 0 : 1;
}
