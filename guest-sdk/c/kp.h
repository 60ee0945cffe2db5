/* kp guest SDK for C: write a kp message handler as one function.
 *
 *   #include "kp.h"
 *
 *   bool kp_handle(const kp_message *msg, kp_outputs *out, kp_error *err) {
 *       if (!msg->value.is_some) return kp_bad_message(err, "tombstones are not handled");
 *       kp_output *o = kp_outputs_push(out);          // a record for the output-topic
 *       kp_output_set_value(o, msg->value.val.ptr, msg->value.val.len);
 *       return true;                                   // false + kp_bad_message/kp_retry_later
 *   }
 *
 * Optionally define `bool kp_init(kp_error_text *err)` (runs once per instance; return false
 * with kp_init_error(err, ...) to refuse the instance).
 *
 * Memory: `msg` belongs to the SDK and is freed after kp_handle returns (copy what you keep).
 * Every kp_output_set_* / kp_output_add_header copies its input; the host frees the outputs.
 *
 * Build with guest-sdk/c/build.sh (clang + wasi-libc, then `kp componentize`). The types are
 * those of bindings/handler_world.h, generated from wit/kp.wit by wit-bindgen.
 */
#ifndef KP_H
#define KP_H

#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "handler_world.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef kp_plugin_types_message_t kp_message;
typedef kp_plugin_types_output_t kp_output;
typedef kp_plugin_types_header_t kp_header;
typedef exports_kp_plugin_handler_list_output_t kp_outputs;
typedef kp_plugin_types_handler_error_t kp_error;
typedef handler_world_string_t kp_error_text;

/* ---- what you write ---- */

/* Handles one message: push zero or more outputs and return true, or return false after
 * kp_bad_message / kp_retry_later. */
bool kp_handle(const kp_message *msg, kp_outputs *out, kp_error *err);

/* Optional (weak): runs once per instance before its first message. */
bool kp_init(kp_error_text *err) __attribute__((weak));

/* ---- outcomes ---- */

/* Marks the message as permanently bad (the on-failure policy applies); returns false. */
bool kp_bad_message(kp_error *err, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Asks kp to retry the message later, with backoff; returns false. */
bool kp_retry_later(kp_error *err, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Refuses the instance from kp_init; returns false. */
bool kp_init_error(kp_error_text *err, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* ---- outputs ---- */

/* Appends a new output (default topic, no key, no value, no headers) and returns it. */
kp_output *kp_outputs_push(kp_outputs *out);
void kp_output_set_topic(kp_output *o, const char *topic);
void kp_output_set_key(kp_output *o, const void *data, size_t len);
void kp_output_set_value(kp_output *o, const void *data, size_t len);
/* Sets the value to a NUL-terminated string (without the NUL). */
void kp_output_set_value_str(kp_output *o, const char *text);
void kp_output_set_partition(kp_output *o, int32_t partition);
void kp_output_add_header(kp_output *o, const char *name, const void *value, size_t len);
/* Copies every header of `msg` onto `o`, in order. */
void kp_output_copy_headers(kp_output *o, const kp_message *msg);

/* ---- reading a message ---- */

/* The first header called `name` (its bytes in *value, *len), or false. */
bool kp_message_header(const kp_message *msg, const char *name, const uint8_t **value, size_t *len);

/* ---- host services ---- */

enum kp_level { KP_TRACE = 0, KP_DEBUG, KP_INFO, KP_WARN, KP_ERROR };
void kp_log(enum kp_level level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* The [config] value for `key` as a new NUL-terminated string (free() it), or NULL. */
char *kp_config_get(const char *key);

#ifdef __cplusplus
}
#endif

#endif /* KP_H */
