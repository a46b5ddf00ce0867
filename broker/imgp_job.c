/*  imgp_job — see imgp_job.h. The one place a record's renditions are
    allocated and freed.
*/
#include "imgp_job.h"

#include <assert.h>
#include <stdlib.h>
#include <string.h>

//  A malloc'd copy of `count` renditions, NULL for none.
static imgp_result_t *
s_results_dup (const imgp_result_t *results, int count)
{
    if (count == 0)
        return NULL;
    imgp_result_t *copy = malloc ((size_t) count * sizeof *copy);
    assert (copy);
    memcpy (copy, results, (size_t) count * sizeof *copy);
    return copy;
}

void
imgp_job_set_results (imgp_job_t *self, const imgp_result_t *results, int count)
{
    assert (self);
    assert (count >= 0 && count <= IMGP_RESULTS_MAX);
    assert (results || count == 0);
    //  Copied before the old array goes: `results` may point into it.
    imgp_result_t *copy = s_results_dup (results, count);
    free (self->results);
    self->results = copy;
    self->result_count = count;
}

void
imgp_job_add_results (imgp_job_t *self, const imgp_result_t *results, int count)
{
    assert (self);
    assert (count >= 0 && self->result_count + count <= IMGP_RESULTS_MAX);
    assert (results || count == 0);
    if (count == 0)
        return;
    int total = self->result_count + count;
    imgp_result_t *all = malloc ((size_t) total * sizeof *all);
    assert (all);
    if (self->result_count)
        memcpy (all, self->results, (size_t) self->result_count * sizeof *all);
    memcpy (all + self->result_count, results, (size_t) count * sizeof *all);
    free (self->results);
    self->results = all;
    self->result_count = total;
}

void
imgp_job_copy (imgp_job_t *dest, const imgp_job_t *source)
{
    assert (dest && source);
    assert (source->result_count >= 0 && source->result_count <= IMGP_RESULTS_MAX);
    *dest = *source;
    dest->results = s_results_dup (source->results, source->result_count);
}

void
imgp_job_clear (imgp_job_t *self)
{
    assert (self);
    free (self->results);
    self->results = NULL;
    self->result_count = 0;
}
