# tests/bench/dispatch.awk — from a broker log, how long each job waited
# for its start, and how much of that wait some resizer slot stood free.
#
# Input: the broker's stderr at INFO level (lines "TIMESTAMP PROGRAM LEVEL
# key=value..."). Read by key, not position, so new keys and events (READY,
# CLUSTER...) pass through; the events used are
#   worker=W event=joined|ready [slots=S]   a resizer is there, S slots (1 until said)
#   worker=W event=lost|left|gone           it is gone
#   job=J event=accepted                    the wait starts
#   job=J event=dispatched [worker=W]       sent (to W: a claim on its slot)
#   job=J event=started worker=W            the wait ends; W has one slot less
#   job=J event=done|failed|requeued|result_refused   J's slot is free again
# A slot is free from its job's end (or its resizer's join) until the next
# STARTED on it, as the broker sees them. "idle wait" is the part of
# [accepted, first started] during which at least one slot was free: the
# time a job waited that fair dispatch could have saved. (Wait and free
# time both include the JOB's and the STARTED's trip through the sockets,
# so even a perfect dispatcher shows a few ms.)
#
# Variables: skip=N ignores jobs accepted on the first N lines (a warm-up;
# workers and slots are still followed there).
# Output, one line per job that started, its columns:
#   1 job id  2 idle wait  3 plain wait (accepted -> first started)
#   4 worker that started it  5 bytes of the original
#   6 the part of idle wait after its last "dispatched" line (with PUSH,
#     or a prefetch, it sat in a resizer's queue then)
#   7 last dispatched -> started
#   8 broker-view idle wait: a slot free AND no job sent to it yet (needs
#     "dispatched worker=W"; without it, the same as column 2)
#   9 dispatched -> started when sent to a resizer with nothing started or
#     sent ahead of it: the resizer's own reaction time ("-" otherwise)
# (times in ms), then lines "# key value" with counts (see dispatch.sh).

function seconds(stamp,    day, h, m, s) {
    # 2026-12-06T06:12:49.123Z; days counted only as changes of the date
    day = substr(stamp, 1, 10)
    if (day != last_day) {
        if (last_day != "")
            day_offset += 86400
        last_day = day
    }
    h = substr(stamp, 12, 2) + 0
    m = substr(stamp, 15, 2) + 0
    s = substr(stamp, 18, 6) + 0
    return day_offset + h * 3600 + m * 60 + s
}

function value(key,    i) {
    for (i = 2; i <= NF; i++)
        if (index($i, key "=") == 1)
            return substr($i, length(key) + 2)
    return ""
}

# Free as the brief counts it: fewer jobs started on W than it has slots.
function is_free(w) {
    return (w in slots) && busy[w] < slots[w]
}

# Free in the broker's view: nor sent a job it has not started yet.
function is_open(w) {
    return (w in slots) && busy[w] + claimed[w] < slots[w]
}

# Add W if new (1 slot), then change its counts, keeping the number of
# free and open workers right.
function update(w, d_busy, d_claimed, new_slots) {
    if (!(w in slots)) {
        slots[w] = 1
        busy[w] = claimed[w] = 0
        free_workers++
        open_workers++
    }
    free_workers -= is_free(w)
    open_workers -= is_open(w)
    busy[w] = busy[w] + d_busy < 0 ? 0 : busy[w] + d_busy
    claimed[w] = claimed[w] + d_claimed < 0 ? 0 : claimed[w] + d_claimed
    if (new_slots > 0)
        slots[w] = new_slots
    free_workers += is_free(w)
    open_workers += is_open(w)
}

function forget(w,    j) {
    free_workers -= is_free(w)
    open_workers -= is_open(w)
    delete slots[w]
    delete busy[w]
    delete claimed[w]
    for (j in held_by)
        if (held_by[j] == w)
            delete held_by[j]
    for (j in claimed_by)
        if (claimed_by[j] == w)
            delete claimed_by[j]
}

# J no longer holds a slot, nor a claim on one.
function release(j) {
    if ((j in held_by) && (held_by[j] in slots))
        update(held_by[j], -1, 0, 0)
    delete held_by[j]
    if ((j in claimed_by) && (claimed_by[j] in slots))
        update(claimed_by[j], 0, -1, 0)
    delete claimed_by[j]
}

$1 ~ /^[0-9][0-9][0-9][0-9]-[0-9][0-9]-[0-9][0-9]T/ {
    t = seconds($1)
    if (!clock_started)
        last_t = t
    clock_started = 1
    # The clocks run while any slot is free (open), up to this event.
    if (t > last_t) {
        if (free_workers > 0)
            free_time += t - last_t
        if (open_workers > 0)
            open_time += t - last_t
        last_t = t
    }

    event = value("event")
    job = value("job")
    worker = value("worker")

    if (job == "" && worker != "") {
        if (event == "joined" || event == "ready")
            update(worker, 0, 0, value("slots") + 0)    # 1 slot until told
        else if (event == "lost" || event == "left" || event == "gone")
            forget(worker)
        next
    }
    if (job == "")
        next

    if (event == "accepted" && NR > skip) {
        accepted_at[job] = dispatched_at[job] = t
        order[++accepted] = job
        size_of[job] = value("bytes") + 0
        free_at_accept[job] = free_at_dispatch[job] = free_time
        open_at_accept[job] = open_time
    } else if (event == "dispatched") {
        # the last dispatch before the start counts
        free_at_dispatch[job] = free_time
        dispatched_at[job] = t
        release(job)
        delete to_idle[job]
        if (worker != "") {
            if ((worker in slots) && busy[worker] + claimed[worker] == 0)
                to_idle[job] = 1        # nothing ahead of it there
            update(worker, 0, 1, 0)
            claimed_by[job] = worker
        }
    } else if (event == "started" && worker != "") {
        release(job)                    # its claim, or an earlier attempt's slot
        if ((job in accepted_at) && !(job in first_start)) {
            first_start[job] = t
            printf "%s %.0f %.0f %s %d %.0f %.0f %.0f %s\n", job,
                (free_time - free_at_accept[job]) * 1000, (t - accepted_at[job]) * 1000,
                worker, size_of[job], (free_time - free_at_dispatch[job]) * 1000,
                (t - dispatched_at[job]) * 1000, (open_time - open_at_accept[job]) * 1000,
                (job in to_idle) ? sprintf("%.0f", (t - dispatched_at[job]) * 1000) : "-"
        }
        update(worker, 1, 0, 0)
        held_by[job] = worker
        ran_on[job] = worker
    } else if (event == "done" || event == "failed") {
        release(job)
        if (job in accepted_at) {
            ended[event]++
            w = value("worker") != "" ? value("worker") : ran_on[job]
            if (event == "done")
                done_by[w]++
        }
    } else if (event == "requeued" || event == "result_refused") {
        release(job)
        if (job in accepted_at)
            ended[event]++
    }
}

END {
    # Start order against accept order: how many jobs accepted later
    # started earlier (FIFO dispatch with no job held at a busy resizer: 0).
    for (i = 1; i <= accepted; i++) {
        a = order[i]
        if (!(a in first_start))
            continue
        n = 0
        for (k = i + 1; k <= accepted; k++)
            if ((order[k] in first_start) && first_start[order[k]] < first_start[a])
                n++
        printf "# overtaken %s %d\n", a, n
    }
    printf "# accepted %d\n", accepted
    printf "# done %d\n# failed %d\n# requeued %d\n# result_refused %d\n", ended["done"],
        ended["failed"], ended["requeued"], ended["result_refused"]
    for (w in done_by)
        printf "# worker %s %d\n", w, done_by[w]
}
