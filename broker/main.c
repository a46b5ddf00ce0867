/*  imgpipe-broker — the program: parse flags (imgp_conf), start the broker
    actor (imgp_broker), wait for SIGINT or SIGTERM, stop it, exit 0.

    Signals: SIGINT and SIGTERM are blocked in every thread (set before any
    thread starts, so libzmq's and the actor's inherit it) and taken by
    sigwait() here; czmq's own handler is switched off. So no socket call
    anywhere sees EINTR, and shutdown has one path: imgp_broker_destroy.
    Nothing but wiring belongs in this file.
*/
#include <czmq.h>
#include <limits.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>

#include "imgp_broker.h"
#include "imgp_conf.h"
#include "imgp_log.h"
#include "imgp_table.h"

static const imgp_conf_spec_t s_specs [] = {
    { "intake", "tcp://127.0.0.1:5571", "ROUTER endpoint frontends SUBMIT jobs to" },
    { "status", "tcp://127.0.0.1:5572", "ROUTER endpoint for STATUS, FETCH and PING" },
    { "jobs", "tcp://127.0.0.1:5573", "PUSH endpoint resizers PULL jobs from" },
    { "results", "tcp://127.0.0.1:5574", "PULL endpoint resizers PUSH heartbeats and results to" },
    { "data-dir", "./imgpipe-data", "spool directory for originals, thumbnails and job records" },
    { "max-queue", "1000", "queued jobs before new ones get queue_full" },
    { "max-jobs", "100000", "jobs held in the status table (finished ones evicted first)" },
    { "max-upload-bytes", "33554432", "largest original accepted" },
    { "max-attempts", "3", "dispatches of a job (1..1000) before attempts_exhausted" },
    { "dispatch-timeout-ms", "10000", "re-queue a job not STARTED this long after dispatch" },
    { "heartbeat-timeout-ms", "3000", "a resizer silent this long is lost; its jobs re-queued" },
    { "job-timeout-ms", "60000", "re-queue a job running longer than this" },
    { "ttl-s", "86400", "seconds finished jobs and thumbnails are kept" },
    { "fsync", NULL, "fsync every spool write (survives power loss; slower)" },
    { "max-waiters", "10000", "STATUS/FETCH requests held for wait_ms; beyond it, answered at once" },
    { NULL, NULL, NULL }
};

//  Read a numeric option into `value`; -1 (message printed) when out of range.
static int
s_number (imgp_conf_t *conf, const char *name, long long min, long long max, long long *value)
{
    return imgp_conf_long (conf, name, min, max, value);
}

static int
s_configure (imgp_conf_t *conf, imgp_broker_config_t *config)
{
    imgp_broker_config_default (config);
    config->intake = imgp_conf_str (conf, "intake");
    config->status = imgp_conf_str (conf, "status");
    config->jobs = imgp_conf_str (conf, "jobs");
    config->results = imgp_conf_str (conf, "results");
    config->data_dir = imgp_conf_str (conf, "data-dir");
    config->fsync = imgp_conf_bool (conf, "fsync");

    long long queue, jobs, upload, attempts, dispatch, heartbeat, job, ttl, waiters;
    if (s_number (conf, "max-queue", 1, 10000000, &queue)
    ||  s_number (conf, "max-jobs", 1, 100000000, &jobs)
    ||  s_number (conf, "max-upload-bytes", 1, IMGP_UPLOAD_LIMIT_MAX, &upload)
    ||  s_number (conf, "max-attempts", 1, IMGP_ATTEMPTS_MAX, &attempts)
    ||  s_number (conf, "dispatch-timeout-ms", 10, 86400000, &dispatch)
    ||  s_number (conf, "heartbeat-timeout-ms", 10, 86400000, &heartbeat)
    ||  s_number (conf, "job-timeout-ms", 10, 86400000, &job)
    ||  s_number (conf, "ttl-s", 1, 3650LL * 86400, &ttl)
    ||  s_number (conf, "max-waiters", 0, 10000000, &waiters))
        return -1;
    config->max_queue = (size_t) queue;
    config->max_jobs = (size_t) jobs;
    config->max_upload_bytes = (size_t) upload;
    config->max_attempts = (int) attempts;
    config->dispatch_timeout_ms = dispatch;
    config->heartbeat_timeout_ms = heartbeat;
    config->job_timeout_ms = job;
    config->ttl_s = ttl;
    config->max_waiters = (size_t) waiters;
    return 0;
}

int
main (int argc, char **argv)
{
    imgp_conf_t *conf = imgp_conf_new ("imgpipe-broker",
        "The imgpipe broker: takes jobs from frontends, hands them to resizers,\n"
        "keeps their status and results in a spool directory.", s_specs);
    if (!conf)
        return 1;
    int rc = imgp_conf_parse (conf, argc, argv);
    imgp_broker_config_t config;
    if (rc == 0 && s_configure (conf, &config))
        rc = -1;
    if (rc != 0) {
        imgp_conf_destroy (&conf);
        return rc > 0 ? 0 : 2;
    }
    imgp_log_init ("imgpipe-broker", imgp_conf_bool (conf, "verbose"));

    sigset_t signals;
    sigemptyset (&signals);
    sigaddset (&signals, SIGINT);
    sigaddset (&signals, SIGTERM);
    pthread_sigmask (SIG_BLOCK, &signals, NULL);
    zsys_handler_set (NULL);
    zsys_init ();

    imgp_broker_t *broker = imgp_broker_new (&config);
    if (!broker) {
        imgp_error ("event=start_failed reason=\"see the lines above\"");
        imgp_conf_destroy (&conf);
        return 1;
    }
    imgp_info ("event=started intake=%s status=%s jobs=%s results=%s data_dir=%s",
               imgp_broker_endpoint (broker, IMGP_BROKER_INTAKE),
               imgp_broker_endpoint (broker, IMGP_BROKER_STATUS),
               imgp_broker_endpoint (broker, IMGP_BROKER_JOBS),
               imgp_broker_endpoint (broker, IMGP_BROKER_RESULTS), config.data_dir);

    int sig = 0;
    sigwait (&signals, &sig);
    imgp_info ("event=stopping signal=%s", sig == SIGINT ? "SIGINT" : "SIGTERM");
    imgp_broker_destroy (&broker);
    imgp_conf_destroy (&conf);
    imgp_info ("event=stopped");
    return 0;
}
