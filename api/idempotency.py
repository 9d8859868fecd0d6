"""The Idempotency-Key header's rule, without pydantic: the API's model (api/messages.py) and the clients
(client/calls.py, which load no pydantic) check a key by this one rule and say the same of a bad one."""

IDEMPOTENCY_HEADER = "Idempotency-Key"
KEY_CHARACTERS = "1 to 255 printable ASCII characters"
KEY_RULE = (
    f"the {IDEMPOTENCY_HEADER} header must be {KEY_CHARACTERS} (a new random one per "
    f"request, e.g. a UUID; the same one only to retry that request)"
)
# a key given back to ask what its request recorded (GET .../complete?key=), said after the parameter's name
ASKED_KEY_RULE = f"must be the {IDEMPOTENCY_HEADER} a question was sent with: {KEY_CHARACTERS}"


def good_key(key: object) -> bool:
    """Whether `key` is an Idempotency-Key the API takes."""
    # (printable ASCII: " " to "~"; str's own tests, not a loop over the characters)
    return isinstance(key, str) and 0 < len(key) <= 255 and key.isascii() and key.isprintable()
