/*  imgpipe-resizer — asks the broker for thumbnail jobs, runs libvips,
    sends results back on the same connection. Start one per core, on any host that reaches the
    broker; stop any of them at any time.

    This file only reads options (one imgp_conf_start into s_config_t) and
    wires imgp_thumb (libvips) to imgp_resizer (the worker loop); it never
    touches sockets or pixels. Order matters: signals are blocked first
    (imgp_signal), so a SIGTERM while flags are read or libvips loads waits
    instead of killing us with 143; the priority is lowered before czmq or
    libvips start a thread, so every thread inherits it. The loop runs in
    main's thread; a small thread takes the signal and asks it to stop.
*/
#include <czmq.h>
#include <pthread.h>
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
                   "libvips worker threads per image (run one resizer per core)"),
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

//  What the stopper thread needs.
typedef struct {
    imgp_resizer_t *resizer;        //  to stop
    const sigset_t *signals;        //  to wait for
} s_stopper_t;

//  Takes SIGINT or SIGTERM and asks the loop to stop after its job.
static void *
s_stopper (void *args)
{
    s_stopper_t *stopper = args;
    int signal = imgp_signal_wait (stopper->signals);
    //  From here on, finish: main may cancel us only while we wait.
    pthread_setcancelstate (PTHREAD_CANCEL_DISABLE, NULL);
    imgp_info ("event=stopping signal=%s", imgp_signal_name (signal));
    imgp_resizer_stop (stopper->resizer);
    return NULL;
}

//  Run the loop until a signal stops it or it fails. Returns run()'s rc.
static int
s_run (imgp_resizer_t *resizer, const sigset_t *signals)
{
    s_stopper_t args = { resizer, signals };
    pthread_t stopper;
    if (pthread_create (&stopper, NULL, s_stopper, &args) != 0) {
        imgp_error ("event=start_failed reason=\"no thread for signals\"");
        return -1;
    }
    int rc = imgp_resizer_run (resizer);
    pthread_cancel (stopper);           //  the loop may have ended by itself
    pthread_join (stopper, NULL);
    return rc;
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

    imgp_resizer_t *resizer = NULL;
    int rc = imgp_thumb_init (&config.thumb);
    if (rc == 0) {
        resizer = imgp_resizer_new (&config.resizer);
        rc = resizer ? s_run (resizer, &signals) : -1;
    }
    imgp_resizer_destroy (&resizer);
    imgp_conf_destroy (&conf);
    return rc == 0 ? 0 : 1;
}
