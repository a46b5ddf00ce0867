/*  imgp_broker — the imgpipe broker as a czmq actor: intake, status
    service, ventilator, status table and spool in one thread.

    Why an actor (as in malamute): main() and the tests start it the same
    way, in-process, and stop it with one call. The actor binds three
    sockets (intake ROUTER, status ROUTER, jobs ROUTER: the ventilator,
    where resizers ask for work and report back), reloads the spool so
    nothing acknowledged is lost, and runs one poll loop with a
    housekeeping tick (dispatch by credit, timeouts, lost workers, TTL).
    All its state is owned by the actor thread; the caller only talks to it
    through imgp_broker_new / _destroy. Never decodes an image; never
    asserts on bytes from a socket.
*/
#ifndef IMGP_BROKER_H_INCLUDED
#define IMGP_BROKER_H_INCLUDED

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "imgp_conf.h"

//  Configuration, a plain value. Strings are borrowed during imgp_broker_new
//  only (the broker keeps copies). Endpoints may use ephemeral ports
//  ("tcp://127.0.0.1:*"); imgp_broker_endpoint() tells the real ones.
typedef struct {
    const char *intake;             //  ROUTER for SUBMIT/PING
    const char *status;             //  ROUTER for STATUS/FETCH/PING
    const char *jobs;               //  ROUTER ventilator, resizers' DEALERs
    const char *data_dir;           //  spool directory
    size_t max_queue;               //  queued jobs before queue_full
    size_t max_jobs;                //  table entries (finished ones evicted first)
    size_t max_upload_bytes;        //  largest original accepted
    int max_attempts;               //  dispatches before attempts_exhausted
    int64_t dispatch_timeout_ms;    //  JOB sent, no STARTED -> re-queue
    int64_t heartbeat_timeout_ms;   //  worker silent -> lost, its jobs re-queued
    int64_t job_timeout_ms;         //  STARTED but no result -> re-queue
    int64_t ttl_s;                  //  finished jobs kept this long
    size_t max_spool_bytes;         //  live spool bytes beyond which uploads get spool_full; 0 none
    int max_store_retries;          //  results not stored (room said there) before failed spool_full
    bool keep_originals;            //  done jobs keep their original until the TTL
    bool fsync;                     //  fdatasync the spool log once per loop pass
    int64_t tick_ms;                //  housekeeping period; 0: 100 ms (not an option)
    size_t max_waiters;             //  STATUS/FETCH held for wait_ms; beyond, answered at once
    const char *curve_secret;       //  our CURVE _secret file; "" or NULL: no keys
    const char *curve_clients;      //  directory of allowed public certificates
    bool insecure;                  //  bind beyond loopback without keys
} imgp_broker_config_t;

//  Which bound socket, for imgp_broker_endpoint().
typedef enum {
    IMGP_BROKER_INTAKE = 0,
    IMGP_BROKER_STATUS,
    IMGP_BROKER_JOBS
} imgp_broker_socket_t;

typedef struct _imgp_broker_t imgp_broker_t;

//  The broker's options, rows of imgp_broker_config_t: the flags of
//  imgpipe-broker, and its defaults (imgp_conf_defaults fills a config
//  with them; tick_ms is left 0).
extern const imgp_conf_spec_t imgp_broker_specs [];

//  The refusals that are the configuration's fault, so a restart cannot
//  mend them (the program exits 2 for them, which supervisors do not
//  retry): --curve-secret without --curve-clients or the other way, an
//  endpoint beyond loopback without keys and without `insecure`. Returns
//  0, or -1 with the reason logged at ERROR.
int imgp_broker_config_check (const imgp_broker_config_t *config);

//  Start the broker: check the config (imgp_broker_config_check), open
//  and scan the spool, load the keys, bind the sockets, start the loop. Returns when it is serving, or NULL (reason
//  logged) when the spool, the keys or a bind failed, or an endpoint
//  beyond loopback was asked for without keys and without `insecure`.
imgp_broker_t *imgp_broker_new (const imgp_broker_config_t *config);

//  Stop the broker cleanly (the loop ends, sockets close, the spool stays)
//  and free it; safe on NULL and twice.
void imgp_broker_destroy (imgp_broker_t **self_p);

//  The endpoint a socket is bound to, ephemeral port resolved (borrowed).
const char *imgp_broker_endpoint (imgp_broker_t *self, imgp_broker_socket_t which);

#endif
