/*  imgp_cli — the commands of `imgpipe`, the command-line client:
        imgpipe submit FILE [--width N ...]           -> prints the job id
        imgpipe status ID                             -> prints its JSON
        imgpipe keygen PATH                           -> writes PATH, PATH_secret
        imgpipe get ID -o OUT [--wait-s N] [--long-poll-s N] -> writes the thumbnail
        imgpipe batch DIR|MANIFEST -o OUTDIR [--parallel N] [--wait-s N] [--width N ...]
                                                      -> a mirrored tree, resumable

    Why: main.c only parses flags and dispatches; each command here reads
    its arguments from the parsed configuration, checks them (exit 2
    before any request when they are wrong), and runs over imgp_http_client
    (one request at a time) or imgp_batch (many). All run an image through
    imgp_roundtrip (upload, wait by long-poll: ?wait= up to --long-poll-s,
    download; one deadline, --wait-s).

    Never: write a partial thumbnail to OUT, retry a request the server
    refused for a reason a retry cannot fix, or hang on a stalled server
    (imgp_roundtrip bounds every request; single commands enforce it with
    a SIGALRM timer, batch with its monitor thread).
*/
#ifndef IMGP_CLI_H_INCLUDED
#define IMGP_CLI_H_INCLUDED

#include "imgp_conf.h"

//  Exit codes, also listed in --help.
enum {
    IMGP_CLI_EXIT_OK = 0,           //  the command did what was asked
    IMGP_CLI_EXIT_REFUSED = 1,      //  the server refused, or a job failed
    IMGP_CLI_EXIT_USAGE = 2,        //  bad flags or arguments
    IMGP_CLI_EXIT_TRANSPORT = 3,    //  server unreachable, or --wait-s passed
    IMGP_CLI_EXIT_INTERRUPTED = 130 //  batch: stopped by Ctrl-C (SIGINT/SIGTERM)
};

//  The flags of imgpipe, for imgp_conf_new, and its --help summary.
extern const imgp_conf_spec_t imgp_cli_specs [];
extern const char imgp_cli_summary [];

//  imgp_conf stops at the first positional argument; commands read better
//  with their options after them ("get ID -o OUT"). Rewrite argv as
//  [program, options..., "--", positionals...], mapping -o to --output.
//  Returns a new array of argv's strings (caller frees the array only) or
//  NULL with a message printed.
char **imgp_cli_argv (int argc, char **argv, int *new_argc);

//  The commands. `argc`/`argv` are the command's own arguments (after its
//  name); flags come from `conf`, made with imgp_cli_specs. Each returns
//  an exit code.
int imgp_cli_submit (imgp_conf_t *conf, int argc, char **argv);
int imgp_cli_status (imgp_conf_t *conf, int argc, char **argv);
//  keygen PATH: imgp_curve_keygen, exit 1 when it refuses (file exists).
int imgp_cli_keygen (imgp_conf_t *conf, int argc, char **argv);
int imgp_cli_get (imgp_conf_t *conf, int argc, char **argv);
int imgp_cli_batch (imgp_conf_t *conf, int argc, char **argv);

#endif
