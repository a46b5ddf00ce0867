/*  imgp_defaults — the options more than one program takes, as imgp_conf
    rows, each stated here and nowhere else.

    Why: a frontend, a broker and a resizer must agree on the broker's
    endpoints and on the largest upload; when each program wrote its own
    row, the defaults drifted apart one edit at a time. A program puts
    IMGP_CONF_INTAKE (its_config_t, its_field) into its table; the name,
    default, range and help come from here. The help lines are written for
    every program that takes the row (the broker binds these endpoints,
    the others connect to them).
*/
#ifndef IMGP_DEFAULTS_H_INCLUDED
#define IMGP_DEFAULTS_H_INCLUDED

#include "imgp_conf.h"
#include "imgp_msg.h"

//  The broker's intake: frontends SUBMIT jobs there (ROUTER).
#define IMGP_CONF_INTAKE(T, F) IMGP_CONF_STR (T, F, "intake", "tcp://127.0.0.1:5571", \
    "broker intake endpoint (ROUTER): frontends SUBMIT jobs to it")

//  The broker's status service: STATUS, FETCH and PING (ROUTER).
#define IMGP_CONF_STATUS(T, F) IMGP_CONF_STR (T, F, "status", "tcp://127.0.0.1:5572", \
    "broker status endpoint (ROUTER): STATUS, FETCH and PING")

//  The broker's ventilator: resizers ask for jobs there and report back
//  over the same connection (ROUTER; resizers connect a DEALER).
#define IMGP_CONF_JOBS(T, F) IMGP_CONF_STR (T, F, "jobs", "tcp://127.0.0.1:5573", \
    "broker ventilator endpoint (ROUTER): resizers take jobs and send results there")

//  The largest original, 32 MiB; set the same on every program.
#define IMGP_CONF_MAX_UPLOAD_BYTES(T, F) IMGP_CONF_NUM (T, F, "max-upload-bytes", \
    33554432, 1, IMGP_UPLOAD_LIMIT_MAX, \
    "largest original accepted, in bytes (set the same on every program)")

//  Extra loaders beyond the default set; frontends sniff for them at
//  upload, resizers let libvips use them. Off unless named.
#define IMGP_CONF_ALLOW_LOADERS(T, F) IMGP_CONF_STR (T, F, "allow-loaders", "", \
    "extra image formats to take, comma list of svg, pdf, magick (set the same " \
    "list on frontends and resizers)")

#endif
