/*  imgpipe-frontend — the HTTP frontend: reads its options (one
    imgp_conf_start), starts the server (imgp_http), then waits: SIGHUP
    reloads, SIGINT or SIGTERM stops it cleanly.

    Signals are blocked first thing (imgp_signal), before any thread
    starts, so every thread (czmq's, libzmq's, civetweb's) inherits the
    mask and only imgp_signal_wait below takes them. The descriptor limit
    is raised to the hard limit: every connection is a descriptor, and the
    default of thousands of connections would not fit the usual soft 1024.
    Nothing else lives here: see imgp_http.c for the routes.
*/
#include <czmq.h>
#include <errno.h>
#include <string.h>
#include <sys/resource.h>

#include "imgp_conf.h"
#include "imgp_curve.h"
#include "imgp_defaults.h"
#include "imgp_http.h"
#include "imgp_log.h"
#include "imgp_signal.h"
#include "imgp_sniff.h"

#define S_PROGRAM "imgpipe-frontend"

//  Everything the options set: the server's config, and the text options
//  turned into something else after loading.
typedef struct {
    imgp_http_config_t http;        //  what imgp_http_new takes
    const char *allow_loaders;      //  parsed into http.sniff_allow
    const char *curve_secret;       //  our CURVE _secret file, "" for plain links
    const char *curve_server;       //  the broker's public certificate (with curve_secret)
} s_config_t;

static const imgp_conf_spec_t s_specs [] = {
    IMGP_CONF_STR (s_config_t, http.listen, "listen", "127.0.0.1:8080",
                   "HTTP address:port to listen on (IPv4 only)"),
    IMGP_CONF_INTAKE (s_config_t, http.intake),
    IMGP_CONF_STATUS (s_config_t, http.status),
    IMGP_CONF_NUM (s_config_t, http.threads, "threads", 3072, 1, 16384,
                   "HTTP worker threads, also the most concurrent connections; each costs "
                   "about 15 kB of memory while idle"),
    IMGP_CONF_MAX_UPLOAD_BYTES (s_config_t, http.max_upload),
    IMGP_CONF_NUM (s_config_t, http.broker_timeout_ms, "broker-timeout-ms", 1500, 100, 600000,
                   "how long to wait for the broker before answering 503; an upload gets "
                   "1 ms more per 10 kB (assumes 10 MB/s to the broker)"),
    IMGP_CONF_NUM (s_config_t, http.head_timeout_ms, "head-timeout-ms", 10000, 100, 3600000,
                   "a request head must arrive within this many milliseconds; also the "
                   "longest silence inside an upload body (408 beyond)"),
    IMGP_CONF_NUM (s_config_t, http.keepalive_timeout_ms, "keepalive-timeout-ms", 5000, 0, 600000,
                   "an idle keep-alive connection is closed after this many milliseconds"),
    IMGP_CONF_NUM (s_config_t, http.upload_timeout_ms, "upload-timeout-ms", 120000, 100, 86400000,
                   "time a whole upload body may take, in milliseconds; a slower one gets "
                   "408 and its connection is closed"),
    IMGP_CONF_NUM (s_config_t, http.conn_per_ip, "conn-per-ip", 64, 0, 100000,
                   "open connections per client address; over it 503 + Retry-After; "
                   "0 = no limit"),
    IMGP_CONF_NUM (s_config_t, http.max_wait_s, "max-wait-s", 30, 0, 30,
                   "longest ?wait= a request may ask for, in seconds"),
    IMGP_CONF_STR (s_config_t, http.api_keys, "api-keys", "",
                   "file of API keys (NAME KEY [RATE [BURST]] a line), re-read on SIGHUP; "
                   "empty = no keys needed"),
    IMGP_CONF_NUM (s_config_t, http.rate_per_ip, "rate-per-ip", 0, 0, 1000000,
                   "requests/s per client address when there are no API keys; 0 = off"),
    IMGP_CONF_NUM (s_config_t, http.cache_max_age_s, "cache-max-age-s", 31536000, 0, 315360000,
                   "Cache-Control max-age of a thumbnail, in seconds (a thumbnail never "
                   "changes under its URL: its ETag changes with the source, options and "
                   "pipeline version)"),
    IMGP_CONF_ALLOW_LOADERS (s_config_t, allow_loaders),
    IMGP_CONF_STR (s_config_t, curve_secret, "curve-secret", "",
                   "our CURVE certificate, the _secret file of `imgpipe keygen` (with "
                   "--curve-server; empty: plain links to the broker)"),
    IMGP_CONF_STR (s_config_t, curve_server, "curve-server", "",
                   "the broker's public CURVE certificate (with --curve-secret)"),
    IMGP_CONF_END
};

//  The text options turned into what the server takes. Returns 0, or -1
//  (logged) on a bad value.
static int
s_configure (s_config_t *config)
{
    if (imgp_sniff_allow_parse (config->allow_loaders, &config->http.sniff_allow))
        return -1;
    if (*config->http.api_keys == 0)
        config->http.api_keys = NULL;   //  keys off
    if (!*config->curve_secret != !*config->curve_server) {
        imgp_error ("event=config_error message=\"CURVE needs both --curve-secret (our "
                    "_secret file) and --curve-server (the broker's public certificate)\"");
        return -1;
    }
    return 0;
}

//  The CURVE client keys, when configured, into config->http.curve (the
//  caller destroys it after the server). Returns 0, or -1 (logged). Links
//  to a broker on another host without keys work, with a warning: anyone
//  on the path reads the uploads.
static int
s_curve (s_config_t *config)
{
    if (*config->curve_secret) {
        config->http.curve = imgp_curve_client_new (config->curve_secret, config->curve_server);
        return config->http.curve ? 0 : -1;
    }
    const char *ends [] = { config->http.intake, config->http.status };
    for (size_t i = 0; i < 2; i++)
        if (!imgp_curve_endpoint_local (ends [i]))
            imgp_warn ("event=plain_link endpoint=%s note=\"no CURVE keys: uploads and "
                       "thumbnails cross the network in the clear\"", ends [i]);
    return 0;
}

//  Raise the soft limit on descriptors to the hard one: a connection is a
//  descriptor, and libzmq needs some of its own. A failure only warns.
static void
s_raise_nofile (void)
{
    struct rlimit limit;
    if (getrlimit (RLIMIT_NOFILE, &limit) == 0 && limit.rlim_cur < limit.rlim_max) {
        limit.rlim_cur = limit.rlim_max;
        if (setrlimit (RLIMIT_NOFILE, &limit) != 0)
            imgp_warn ("event=nofile_failed reason=\"%s\"", strerror (errno));
    }
}

//  Serve until SIGINT or SIGTERM; SIGHUP reloads.
static void
s_serve (imgp_http_t *http, const sigset_t *signals)
{
    int signal;
    while ((signal = imgp_signal_wait (signals)) == SIGHUP) {
        imgp_info ("event=reload signal=SIGHUP");
        imgp_http_reload (http);        //  logs what came of it
    }
    imgp_info ("event=stopping signal=%s", imgp_signal_name (signal));
}

int
main (int argc, char **argv)
{
    sigset_t signals;
    imgp_signal_block (&signals, true);
    s_config_t config = { 0 };
    int exit_code;
    imgp_conf_t *conf = imgp_conf_start (
        S_PROGRAM, "HTTP frontend of imgpipe: takes uploads, hands them to the broker, "
                   "serves status and thumbnails.", s_specs, argc, argv, &config, &exit_code);
    if (!conf)
        return exit_code;
    if (s_configure (&config)) {
        imgp_conf_destroy (&conf);
        return 2;
    }
    s_raise_nofile ();
    zsys_init ();

    imgp_http_t *http = s_curve (&config) == 0 ? imgp_http_new (&config.http) : NULL;
    if (!http) {
        imgp_curve_destroy (&config.http.curve);
        imgp_conf_destroy (&conf);
        return 1;
    }
    imgp_info ("event=listening listen=%s port=%d intake=%s status=%s threads=%d "
               "max_upload=%zu upload_timeout_ms=%d curve=%s", config.http.listen,
               imgp_http_port (http), config.http.intake, config.http.status,
               config.http.threads, config.http.max_upload, config.http.upload_timeout_ms,
               config.http.curve ? "on" : "off");
    s_serve (http, &signals);
    imgp_http_destroy (&http);
    imgp_curve_destroy (&config.http.curve);
    imgp_info ("event=stopped");
    imgp_conf_destroy (&conf);
    return 0;
}
