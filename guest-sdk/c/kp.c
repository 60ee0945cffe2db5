/* kp guest SDK for C: the glue between the generated bindings and kp_handle / kp_init. */
#include "kp.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void *xmalloc(size_t n) {
    void *p = malloc(n ? n : 1);
    if (!p) abort(); /* out of guest memory: trap; the host reports it and replaces the instance */
    return p;
}

static void copy_bytes(handler_world_list_u8_t *dst, const void *data, size_t len) {
    dst->ptr = xmalloc(len);
    if (len) memcpy(dst->ptr, data, len);
    dst->len = len;
}

static void vformat(handler_world_string_t *dst, const char *fmt, va_list ap) {
    va_list copy;
    va_copy(copy, ap);
    int n = vsnprintf(NULL, 0, fmt, copy);
    va_end(copy);
    if (n < 0) n = 0;
    char *buf = xmalloc((size_t)n + 1);
    vsnprintf(buf, (size_t)n + 1, fmt, ap);
    dst->ptr = (uint8_t *)buf;
    dst->len = (size_t)n;
}

/* The generated bindings reference this symbol to force-link wit-bindgen's component-type object.
 * kp's C SDK has no such object: `kp componentize` embeds kp's WIT world itself. */
void __component_type_object_force_link_handler_world(void) {}

/* ---- exports called by the host ---- */

bool exports_kp_plugin_handler_init(handler_world_string_t *err) {
    if (kp_init) return kp_init(err);
    return true;
}

bool exports_kp_plugin_handler_handle(exports_kp_plugin_handler_message_t *message,
                                      exports_kp_plugin_handler_list_output_t *ret,
                                      exports_kp_plugin_handler_handler_error_t *err) {
    ret->ptr = NULL;
    ret->len = 0;
    bool ok = kp_handle(message, ret, err);
    kp_plugin_types_message_free(message); /* arguments of an export belong to the callee */
    if (!ok) exports_kp_plugin_handler_list_output_free(ret);
    return ok;
}

/* ---- outcomes ---- */

static bool fail(kp_error *err, uint8_t tag, const char *fmt, va_list ap) {
    err->tag = tag;
    vformat(tag == KP_PLUGIN_TYPES_HANDLER_ERROR_RETRY_LATER ? &err->val.retry_later : &err->val.bad_message, fmt, ap);
    return false;
}

bool kp_bad_message(kp_error *err, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    fail(err, KP_PLUGIN_TYPES_HANDLER_ERROR_BAD_MESSAGE, fmt, ap);
    va_end(ap);
    return false;
}

bool kp_retry_later(kp_error *err, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    fail(err, KP_PLUGIN_TYPES_HANDLER_ERROR_RETRY_LATER, fmt, ap);
    va_end(ap);
    return false;
}

bool kp_init_error(kp_error_text *err, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vformat(err, fmt, ap);
    va_end(ap);
    return false;
}

/* ---- outputs ---- */

kp_output *kp_outputs_push(kp_outputs *out) {
    /* The list has no capacity field: keep capacity at the next power of two and grow when
     * len is 0 or a power of two (1, 2, 4, ...). */
    if ((out->len & (out->len - 1)) == 0) {
        kp_output *grown = realloc(out->ptr, (out->len ? out->len * 2 : 1) * sizeof(kp_output));
        if (!grown) abort();
        out->ptr = grown;
    }
    kp_output *o = &out->ptr[out->len++];
    memset(o, 0, sizeof *o);
    return o;
}

void kp_output_set_topic(kp_output *o, const char *topic) {
    handler_world_option_string_free(&o->topic);
    o->topic.is_some = true;
    handler_world_string_dup(&o->topic.val, topic);
}

void kp_output_set_key(kp_output *o, const void *data, size_t len) {
    handler_world_option_list_u8_free(&o->key);
    o->key.is_some = true;
    copy_bytes(&o->key.val, data, len);
}

void kp_output_set_value(kp_output *o, const void *data, size_t len) {
    handler_world_option_list_u8_free(&o->value);
    o->value.is_some = true;
    copy_bytes(&o->value.val, data, len);
}

void kp_output_set_value_str(kp_output *o, const char *text) { kp_output_set_value(o, text, strlen(text)); }

void kp_output_set_partition(kp_output *o, int32_t partition) {
    o->partition.is_some = true;
    o->partition.val = partition;
}

static kp_header *push_header(kp_output *o) {
    kp_header *grown = realloc(o->headers.ptr, (o->headers.len + 1) * sizeof(kp_header));
    if (!grown) abort();
    o->headers.ptr = grown;
    return &grown[o->headers.len++];
}

void kp_output_add_header(kp_output *o, const char *name, const void *value, size_t len) {
    kp_header *h = push_header(o);
    handler_world_string_dup(&h->name, name);
    copy_bytes(&h->value, value, len);
}

void kp_output_copy_headers(kp_output *o, const kp_message *msg) {
    for (size_t i = 0; i < msg->headers.len; i++) {
        const kp_header *h = &msg->headers.ptr[i];
        kp_header *copy = push_header(o);
        handler_world_string_dup_n(&copy->name, (const char *)h->name.ptr, h->name.len);
        copy_bytes(&copy->value, h->value.ptr, h->value.len);
    }
}

/* ---- reading ---- */

bool kp_message_header(const kp_message *msg, const char *name, const uint8_t **value, size_t *len) {
    size_t n = strlen(name);
    for (size_t i = 0; i < msg->headers.len; i++) {
        const kp_header *h = &msg->headers.ptr[i];
        if (h->name.len == n && memcmp(h->name.ptr, name, n) == 0) {
            *value = h->value.ptr;
            *len = h->value.len;
            return true;
        }
    }
    return false;
}

/* ---- host services ---- */

void kp_log(enum kp_level level, const char *fmt, ...) {
    handler_world_string_t text;
    va_list ap;
    va_start(ap, fmt);
    vformat(&text, fmt, ap);
    va_end(ap);
    kp_plugin_logging_log((kp_plugin_logging_level_t)level, &text);
    handler_world_string_free(&text);
}

char *kp_config_get(const char *key) {
    handler_world_string_t k, value;
    handler_world_string_set(&k, key);
    if (!kp_plugin_config_get(&k, &value)) return NULL;
    char *text = xmalloc(value.len + 1);
    memcpy(text, value.ptr, value.len);
    text[value.len] = '\0';
    handler_world_string_free(&value);
    return text;
}
