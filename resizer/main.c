/*  imgpipe-resizer — pulls thumbnail jobs from the broker, runs libvips,
    pushes results back. Start one per core, on any host that reaches the
    broker; stop any of them at any time.

    This file only reads flags (imgp_conf) and wires imgp_thumb (libvips)
    to imgp_resizer (the worker loop); it never touches sockets or pixels.
*/
#include <czmq.h>
#include <stdlib.h>

#include "imgp_conf.h"
#include "imgp_log.h"
#include "imgp_msg.h"
#include "imgp_resizer.h"
#include "imgp_thumb.h"

static const imgp_conf_spec_t s_specs [] = {
    { "jobs", "tcp://127.0.0.1:5573", "broker ventilator endpoint to pull jobs from" },
    { "results", "tcp://127.0.0.1:5574", "broker sink endpoint to push results and heartbeats to" },
    { "name", "", "worker name prefix in messages and logs (default <hostname>-<pid>); a "
      "random suffix is added so each process is a new worker to the broker" },
    { "max-pixels", "100000000", "largest width x height decoded; bigger fails too_many_pixels" },
    { "max-upload-bytes", "33554432", "largest original accepted from the broker" },
    { "heartbeat-ms", "1000", "heartbeat interval in milliseconds" },
    { "vips-threads", "1", "libvips worker threads per image (run one resizer per core)" },
    { "allow-loaders", "", "extra image loaders to enable, comma list of svg, pdf, magick "
      "(set the same list on the frontends)" },
    { "time-limit-ms", "30000", "time one image may take before it fails with timeout; keep it "
      "below the broker's --job-timeout-ms (60000)" },
    { NULL, NULL, NULL }
};

//  Numeric flags into the two configurations. Returns 0 or -1 (printed).
static int
s_read_numbers (imgp_conf_t *conf, imgp_thumb_config_t *thumb, imgp_resizer_config_t *resizer)
{
    long long max_pixels, max_upload, heartbeat_ms, threads, time_limit_ms;
    if (imgp_conf_long (conf, "max-pixels", 1, 1000000000000LL, &max_pixels)
    ||  imgp_conf_long (conf, "max-upload-bytes", 1, IMGP_UPLOAD_LIMIT_MAX, &max_upload)
    ||  imgp_conf_long (conf, "heartbeat-ms", 10, 600000, &heartbeat_ms)
    ||  imgp_conf_long (conf, "vips-threads", 1, 256, &threads)
    ||  imgp_conf_long (conf, "time-limit-ms", 1, 86400000, &time_limit_ms))
        return -1;
    thumb->max_pixels = max_pixels;
    thumb->vips_threads = (int) threads;
    thumb->time_limit_ms = (int) time_limit_ms;
    resizer->max_upload_bytes = max_upload;
    resizer->heartbeat_ms = (int) heartbeat_ms;
    return 0;
}

int
main (int argc, char **argv)
{
    //  First thing: czmq's SIGINT/SIGTERM handler sets zsys_interrupted,
    //  which the loop polls. Installed later (after flags and libvips, some
    //  100 ms) a SIGTERM in between would kill us with 143.
    zsys_init ();
    imgp_conf_t *conf = imgp_conf_new ("imgpipe-resizer",
                                       "Makes thumbnails for imgpipe: pulls jobs from the broker, "
                                       "runs libvips, pushes results.",
                                       s_specs);
    if (!conf)
        return 1;
    int rc = imgp_conf_parse (conf, argc, argv);
    if (rc != 0) {
        imgp_conf_destroy (&conf);
        return rc > 0 ? 0 : 2;
    }
    imgp_log_init ("imgpipe-resizer", imgp_conf_bool (conf, "verbose"));

    imgp_thumb_config_t thumb = { .allow_loaders = imgp_conf_str (conf, "allow-loaders") };
    imgp_resizer_config_t config = {
        .jobs = imgp_conf_str (conf, "jobs"),
        .results = imgp_conf_str (conf, "results"),
        .name = imgp_conf_str (conf, "name"),
    };
    if (s_read_numbers (conf, &thumb, &config)) {
        imgp_conf_destroy (&conf);
        return 2;
    }
    imgp_resizer_t *resizer = NULL;
    rc = imgp_thumb_init (&thumb);
    if (rc == 0) {
        resizer = imgp_resizer_new (&config);
        rc = resizer ? imgp_resizer_run (resizer) : -1;
    }
    imgp_resizer_destroy (&resizer);
    imgp_conf_destroy (&conf);
    return rc == 0 ? 0 : 1;
}
