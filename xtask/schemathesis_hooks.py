"""Schemathesis hooks for `cargo xtask schemathesis` (loaded through SCHEMATHESIS_HOOKS).

`POST /inbound-email/{token}` takes a raw `message/rfc822` body (`type: string, format:
binary`), a media type schemathesis has no serializer for: the spec's example and the drawn
values go on the wire as they are.
"""

import schemathesis


@schemathesis.serializer("message/rfc822")
def _raw_message(ctx, value):
    if isinstance(value, str):
        return value.encode("utf-8", "surrogatepass")
    if isinstance(value, (bytes, bytearray)):
        return bytes(value)
    # Negative cases may draw a non-string (a number, an object): send its text.
    return str(value).encode("utf-8", "surrogatepass")
