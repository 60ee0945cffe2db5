/* metrics (C): turns Graphite plaintext metric lines into JSON records, keyed by metric name,
 * and raises an alert record when a value crosses a threshold.
 *
 *   in:  "servers.web1.cpu 93.5 1700000000"          (name value unix-seconds)
 *   out: {"metric":"servers.web1.cpu","value":93.5,"timestamp":1700000000}
 *        on the output-topic, key = the metric name; the input's headers are kept.
 *   [config] alert-threshold = "90", alert-topic = "alerts": a value at or above the threshold
 *        is also sent to alert-topic, with a header `alert: threshold`.
 * A line that does not parse is refused as a bad message; a tombstone is dropped (no output).
 */
#include <ctype.h>
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kp.h"

static double alert_threshold = INFINITY;
static char *alert_topic = NULL;

bool kp_init(kp_error_text *err) {
    char *threshold = kp_config_get("alert-threshold");
    if (threshold) {
        char *end;
        errno = 0;
        alert_threshold = strtod(threshold, &end);
        bool bad = errno != 0 || end == threshold || *end != '\0';
        free(threshold);
        if (bad) return kp_init_error(err, "[config] alert-threshold is not a number");
        alert_topic = kp_config_get("alert-topic");
        if (!alert_topic) return kp_init_error(err, "[config] alert-threshold needs alert-topic");
    }
    kp_log(KP_INFO, "alerts at %g to %s", alert_threshold, alert_topic ? alert_topic : "(none)");
    return true;
}

/* One parsed line. `name` points into a NUL-terminated copy of the input. */
struct metric {
    const char *name;
    double value;
    long long timestamp;
};

static bool parse(char *line, struct metric *m, const char **why) {
    /* Trailing newline/whitespace is common in plaintext feeds. */
    size_t n = strlen(line);
    while (n > 0 && isspace((unsigned char)line[n - 1])) line[--n] = '\0';
    char *save = NULL;
    char *name = strtok_r(line, " \t", &save);
    char *value = strtok_r(NULL, " \t", &save);
    char *ts = strtok_r(NULL, " \t", &save);
    if (!name || !value || !ts || strtok_r(NULL, " \t", &save)) {
        *why = "expected three fields: name value timestamp";
        return false;
    }
    for (const char *c = name; *c; c++) {
        if (!isalnum((unsigned char)*c) && !strchr("._-:", *c)) {
            *why = "the metric name may hold letters, digits and . _ - : only";
            return false;
        }
    }
    char *end;
    errno = 0;
    m->value = strtod(value, &end);
    if (errno || *end || !isfinite(m->value)) {
        *why = "the value is not a finite number";
        return false;
    }
    errno = 0;
    m->timestamp = strtoll(ts, &end, 10);
    if (errno || *end || m->timestamp < 0) {
        *why = "the timestamp is not a non-negative integer";
        return false;
    }
    m->name = name;
    return true;
}

bool kp_handle(const kp_message *msg, kp_outputs *out, kp_error *err) {
    if (!msg->value.is_some) return true; /* a tombstone: nothing to convert */
    char *line = malloc(msg->value.val.len + 1);
    if (!line) return kp_retry_later(err, "out of memory");
    memcpy(line, msg->value.val.ptr, msg->value.val.len);
    line[msg->value.val.len] = '\0';
    if (strlen(line) != msg->value.val.len) {
        free(line);
        return kp_bad_message(err, "the line contains a NUL byte");
    }

    struct metric m;
    const char *why = NULL;
    if (!parse(line, &m, &why)) {
        free(line);
        return kp_bad_message(err, "not a Graphite plaintext line (%s)", why);
    }
    char json[512];
    int len = snprintf(json, sizeof json, "{\"metric\":\"%s\",\"value\":%.17g,\"timestamp\":%lld}", m.name, m.value, m.timestamp);
    if (len < 0 || (size_t)len >= sizeof json) {
        free(line);
        return kp_bad_message(err, "the metric name is too long");
    }

    kp_output *o = kp_outputs_push(out);
    kp_output_set_key(o, m.name, strlen(m.name));
    kp_output_set_value(o, json, (size_t)len);
    kp_output_copy_headers(o, msg);
    if (alert_topic && m.value >= alert_threshold) {
        kp_output *alert = kp_outputs_push(out);
        kp_output_set_topic(alert, alert_topic);
        kp_output_set_key(alert, m.name, strlen(m.name));
        kp_output_set_value(alert, json, (size_t)len);
        kp_output_add_header(alert, "alert", "threshold", strlen("threshold"));
    }
    free(line);
    return true;
}
