/* The {{name}} kp handler: copies each message to the output topic with a `handled-by` header.
 * Replace kp_handle with your logic; sdk/kp.h lists the helpers. */
#include <string.h>

#include "kp.h"

bool kp_handle(const kp_message *msg, kp_outputs *out, kp_error *err) {
    if (!msg->value.is_some) return kp_bad_message(err, "{{name}} does not handle tombstones");
    kp_output *o = kp_outputs_push(out);
    if (msg->key.is_some) kp_output_set_key(o, msg->key.val.ptr, msg->key.val.len);
    kp_output_set_value(o, msg->value.val.ptr, msg->value.val.len);
    kp_output_copy_headers(o, msg);
    kp_output_add_header(o, "handled-by", "{{name}}", strlen("{{name}}"));
    return true;
}
