/*  imgpipe-frontend — the HTTP frontend: parses flags, starts the server
    (imgp_http), waits for SIGINT or SIGTERM, stops cleanly.

    Signals are blocked before any thread starts, so every thread (czmq's,
    libzmq's, civetweb's) inherits the mask and only sigwait() below takes
    them; czmq is told not to install its own handler. Nothing else lives
    here: see imgp_http.c for the routes.
*/
#include <czmq.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/resource.h>

#include "imgp_conf.h"
#include "imgp_http.h"
#include "imgp_log.h"
#include "imgp_msg.h"
#include "imgp_sniff.h"

#define S_PROGRAM "imgpipe-frontend"

static const imgp_conf_spec_t s_specs [] = {
    { "listen", "127.0.0.1:8080", "HTTP address:port to listen on (IPv4 only)" },
    { "intake", "tcp://127.0.0.1:5571", "broker intake endpoint (job submission)" },
    { "status", "tcp://127.0.0.1:5572", "broker status endpoint (status, results, health)" },
    { "threads", "4096", "HTTP worker threads, also the most concurrent connections" },
    { "max-upload-bytes", "33554432", "largest image upload accepted, in bytes" },
    { "broker-timeout-ms", "1500", "how long to wait for the broker before answering 503; an "
      "upload gets 1 ms more per 10 kB (assumes 10 MB/s to the broker)" },
    { "head-timeout-ms", "10000", "a request head must arrive within this many milliseconds; "
      "also the longest silence inside an upload body (408 beyond)" },
    { "keepalive-timeout-ms", "5000", "an idle keep-alive connection is closed after this" },
    { "conn-per-ip", "64", "open connections per client address; over it 503 + Retry-After; "
      "0 = no limit" },
    { "max-wait-s", "30", "longest ?wait= a status or thumbnail request may ask for" },
    { "upload-timeout-ms", "120000", "time a whole upload body may take, in milliseconds; a "
      "slower one gets 408 and its connection is closed" },
    { "allow-loaders", "", "extra formats to take at upload, comma list of svg, pdf, magick "
      "(set the same list on the resizers)" },
    { NULL, NULL, NULL }
};

//  Read the numeric flags into `config`. Returns 0 or -1 (message printed).
static int
s_config (imgp_conf_t *conf, imgp_http_config_t *config)
{
    long long threads, max_upload, broker_timeout, request_timeout, upload_timeout;
    long long keepalive, per_ip, max_wait;
    if (imgp_conf_long (conf, "threads", 1, 16384, &threads)
    ||  imgp_conf_long (conf, "max-upload-bytes", 1, IMGP_UPLOAD_LIMIT_MAX, &max_upload)
    ||  imgp_conf_long (conf, "broker-timeout-ms", 100, 600000, &broker_timeout)
    ||  imgp_conf_long (conf, "head-timeout-ms", 100, 3600000, &request_timeout)
    ||  imgp_conf_long (conf, "upload-timeout-ms", 100, 86400000, &upload_timeout)
    ||  imgp_conf_long (conf, "keepalive-timeout-ms", 0, 600000, &keepalive)
    ||  imgp_conf_long (conf, "conn-per-ip", 0, 100000, &per_ip)
    ||  imgp_conf_long (conf, "max-wait-s", 0, 30, &max_wait))
        return -1;
    if (imgp_sniff_allow_parse (imgp_conf_str (conf, "allow-loaders"), &config->sniff_allow))
        return -1;
    config->listen = imgp_conf_str (conf, "listen");
    config->intake = imgp_conf_str (conf, "intake");
    config->status = imgp_conf_str (conf, "status");
    config->threads = (int) threads;
    config->max_upload = (size_t) max_upload;
    config->broker_timeout_ms = (int) broker_timeout;
    config->head_timeout_ms = (int) request_timeout;
    config->upload_timeout_ms = (int) upload_timeout;
    config->keepalive_timeout_ms = (int) keepalive;
    config->conn_per_ip = (int) per_ip;
    config->max_wait_s = (int) max_wait;
    return 0;
}

//  Block SIGINT and SIGTERM in this thread and every thread made after.
static void
s_block_signals (sigset_t *signals)
{
    sigemptyset (signals);
    sigaddset (signals, SIGINT);
    sigaddset (signals, SIGTERM);
    pthread_sigmask (SIG_BLOCK, signals, NULL);
}

int
main (int argc, char **argv)
{
    //  First thing, so a signal that comes while we read flags or start
    //  waits for sigwait() below instead of killing us with 143.
    sigset_t signals;
    s_block_signals (&signals);
    imgp_conf_t *conf = imgp_conf_new (
        S_PROGRAM, "HTTP frontend of imgpipe: takes uploads, hands them to the broker, "
                   "serves status and thumbnails.", s_specs);
    if (!conf)
        return 1;
    int rc = imgp_conf_parse (conf, argc, argv);
    if (rc == 0)
        imgp_log_init (S_PROGRAM, imgp_conf_bool (conf, "verbose"));
    imgp_http_config_t config = { 0 };
    if (rc == 0 && s_config (conf, &config))
        rc = -1;
    if (rc) {
        imgp_conf_destroy (&conf);
        return rc > 0 ? 0 : 2;
    }

    zsys_handler_set (NULL);
    zsys_init ();
    //  A descriptor per open connection, one worker thread per connection.
    struct rlimit files;
    if (getrlimit (RLIMIT_NOFILE, &files) == 0 && files.rlim_cur < files.rlim_max) {
        files.rlim_cur = files.rlim_max;
        setrlimit (RLIMIT_NOFILE, &files);
    }

    imgp_http_t *http = imgp_http_new (&config);
    if (!http) {
        imgp_conf_destroy (&conf);
        return 1;
    }
    imgp_info ("event=listening listen=%s port=%d intake=%s status=%s threads=%d "
               "max_upload=%zu upload_timeout_ms=%d", config.listen, imgp_http_port (http),
               config.intake, config.status, config.threads, config.max_upload,
               config.upload_timeout_ms);
    int signal = 0;
    sigwait (&signals, &signal);
    imgp_info ("event=stopping signal=%s", strsignal (signal));
    imgp_http_destroy (&http);
    imgp_info ("event=stopped");
    imgp_conf_destroy (&conf);
    return 0;
}
