/*  fuzz_id_valid — libFuzzer target for imgp_id_valid, the check every
    route runs on a client-supplied job id before it reaches a spool path
    or a table lookup.

    Why: a wrong "true" here is a path traversal into the broker's spool,
    a read past the end is an overflow on a client's bytes. The input is
    the id text (cut at its first NUL, as a C string). The target compares
    the answer with an independent statement of the rule: exactly
    IMGP_ID_LEN characters, each one of 0-9a-f.

    Never: keep state across inputs.
*/
#include "imgp_id.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int
LLVMFuzzerTestOneInput (const uint8_t *data, size_t size)
{
    //  An exact-size heap copy, so ASan sees any read past the NUL.
    char *text = malloc (size + 1);
    if (!text)
        return 0;
    memcpy (text, data, size);
    text [size] = '\0';
    bool expected = strlen (text) == IMGP_ID_LEN
                 && strspn (text, "0123456789abcdef") == IMGP_ID_LEN;
    if (imgp_id_valid (text) != expected) {
        fprintf (stderr, "fuzz_id_valid: imgp_id_valid (\"%s\") is %s\n", text,
                 expected ? "false" : "true");
        abort ();
    }
    free (text);
    return 0;
}
