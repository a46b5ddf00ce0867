/*  imgp_id — job ids: 128 random bits as 32 lowercase hex characters.

    Why: ids are the only client-supplied value that reaches a file path (the
    broker's spool) or a table lookup, so every route validates them with
    imgp_id_valid() first. Hex is URL-safe and case-stable. Never derive an
    id from user input.
*/
#ifndef IMGP_ID_H_INCLUDED
#define IMGP_ID_H_INCLUDED

#include <stdbool.h>

#define IMGP_ID_LEN 32

//  Write a new random id (IMGP_ID_LEN chars + NUL) into `id`, from the
//  kernel's CSPRNG. Returns 0, or -1 if no randomness was available.
int imgp_id_new (char id [IMGP_ID_LEN + 1]);

//  True when `text` is exactly IMGP_ID_LEN lowercase hex characters.
bool imgp_id_valid (const char *text);

#endif
