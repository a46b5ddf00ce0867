/*  imgpipe — the command-line client of the imgpipe HTTP API.

    Why: a user (or a script) should be able to upload an image, ask how it
    is doing, fetch its thumbnail, or run a whole directory through the
    cluster, without writing HTTP by hand:
        imgpipe submit photo.jpg --width 200 --format webp   -> prints the id
        imgpipe status ID                                    -> prints JSON
        imgpipe get ID -o thumb.webp --wait-s 30             -> writes the file
        imgpipe batch photos/ -o thumbs/ --parallel 8        -> one line a file
        imgpipe keygen /etc/imgpipe/r1                       -> a CURVE key pair
    This file parses flags (proto/imgp_conf) and dispatches to a command of
    imgp_cli; it holds no HTTP, file or thread code of its own.

    Never: do a command's work here.
*/
#include "imgp_cli.h"
#include "imgp_conf.h"
#include "imgp_log.h"

#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const struct {
    const char *name;                               //  command word
    int (*run) (imgp_conf_t *, int, char **);       //  its implementation
} s_commands [] = {
    { "submit", imgp_cli_submit },
    { "status", imgp_cli_status },
    { "get", imgp_cli_get },
    { "batch", imgp_cli_batch },
    { "keygen", imgp_cli_keygen },
};
#define S_COMMANDS (sizeof s_commands / sizeof s_commands [0])

static int
s_dispatch (imgp_conf_t *conf, int argc, char **argv)
{
    if (argc < 1) {
        fprintf (stderr, "imgpipe: no command given (submit, status, get, batch or keygen; see --help)\n");
        return IMGP_CLI_EXIT_USAGE;
    }
    for (size_t i = 0; i < S_COMMANDS; i++)
        if (strcmp (argv [0], s_commands [i].name) == 0)
            return s_commands [i].run (conf, argc - 1, argv + 1);
    fprintf (stderr, "imgpipe: unknown command '%s' (submit, status, get, batch or keygen)\n", argv [0]);
    return IMGP_CLI_EXIT_USAGE;
}

int
main (int argc, char **argv)
{
    //  A server that answers early and closes must not kill us mid-upload.
    signal (SIGPIPE, SIG_IGN);
    int conf_argc = 0;
    char **conf_argv = imgp_cli_argv (argc, argv, &conf_argc);
    if (!conf_argv)
        return IMGP_CLI_EXIT_USAGE;
    imgp_conf_t *conf = imgp_conf_new ("imgpipe", imgp_cli_summary, imgp_cli_specs);
    if (!conf) {
        free (conf_argv);
        return IMGP_CLI_EXIT_USAGE;
    }
    int exit_code = IMGP_CLI_EXIT_USAGE;
    int rc = imgp_conf_parse (conf, conf_argc, conf_argv);
    if (rc == 1)
        exit_code = IMGP_CLI_EXIT_OK;
    else
    if (rc == 0 && imgp_conf_log_start (conf) == 0)
        exit_code = s_dispatch (conf, imgp_conf_argc (conf), imgp_conf_argv (conf));
    imgp_conf_destroy (&conf);
    free (conf_argv);
    return exit_code;
}
