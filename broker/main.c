/*  imgpipe-broker — the program: read its options (imgp_broker_specs, one
    imgp_conf_start), start the broker actor (imgp_broker), wait for SIGINT
    or SIGTERM, stop it, exit 0 (2: a configuration it refuses; 1: it
    could not start).

    Signals are blocked first thing (imgp_signal), before any thread
    starts, so libzmq's and the actor's threads inherit the mask and only
    imgp_signal_wait here takes them: no socket call anywhere sees EINTR,
    and shutdown has one path, imgp_broker_destroy. Nothing but wiring
    belongs in this file.
*/
#include <czmq.h>
#include <signal.h>

#include "imgp_broker.h"
#include "imgp_conf.h"
#include "imgp_log.h"
#include "imgp_signal.h"

int
main (int argc, char **argv)
{
    sigset_t signals;
    imgp_signal_block (&signals, false);
    imgp_broker_config_t config = { 0 };
    int exit_code;
    imgp_conf_t *conf = imgp_conf_start ("imgpipe-broker",
        "The imgpipe broker: takes jobs from frontends, hands them to resizers,\n"
        "keeps their status and results in a spool directory.", imgp_broker_specs,
        argc, argv, &config, &exit_code);
    if (!conf)
        return exit_code;
    //  A few lines a job: collected, written once per loop pass (imgp_log.h).
    imgp_log_set_buffered (true);
    zsys_init ();

    //  Exit 2 for what only an operator can mend (deploy/run.sh and the
    //  systemd units do not restart on it); 1 for the rest (a port in use,
    //  a spool not writable yet), which a restart may get past.
    if (imgp_broker_config_check (&config)) {
        imgp_info ("event=stopped reason=bad_config");
        imgp_conf_destroy (&conf);
        return 2;
    }
    imgp_broker_t *broker = imgp_broker_new (&config);
    if (!broker) {
        //  The reason is the ERROR line above, where it was found: one line
        //  to read, not two.
        imgp_info ("event=stopped reason=start_failed");
        imgp_conf_destroy (&conf);
        return 1;
    }
    imgp_info ("event=started intake=%s status=%s jobs=%s data_dir=\"%s\" curve=%s",
               imgp_broker_endpoint (broker, IMGP_BROKER_INTAKE),
               imgp_broker_endpoint (broker, IMGP_BROKER_STATUS),
               imgp_broker_endpoint (broker, IMGP_BROKER_JOBS), config.data_dir,
               config.curve_secret && config.curve_secret [0] ? "on" : "off");

    int signal = imgp_signal_wait (&signals);
    imgp_info ("event=stopping signal=%s", imgp_signal_name (signal));
    imgp_broker_destroy (&broker);
    imgp_conf_destroy (&conf);
    imgp_info ("event=stopped");
    return 0;
}
