"""JSON read strictly, the same way wherever askfirst takes it in (import files, the API).

JSON itself lets an object give a key twice (most readers keep the last) and nest without
end (Python's reader runs out of stack). A request or line that says ``"action": "grant"``
and then ``"action": "withdraw"`` has no one meaning, so askfirst refuses it rather than
guess; and nothing askfirst reads is nested more than a few levels.
"""

from __future__ import annotations

import json
from typing import Any

from askfirst.errors import InputError

MAX_DEPTH = 32  # arrays and objects inside each other, at most


class _RepeatedKey(Exception):
    def __init__(self, key: str) -> None:
        self.key = key


def _no_repeated_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    obj: dict[str, Any] = {}
    for key, value in pairs:
        if key in obj:
            raise _RepeatedKey(key)
        obj[key] = value
    return obj


def _too_deep(value: Any) -> bool:
    """Whether arrays and objects nest more than MAX_DEPTH levels in ``value`` (walked
    without recursion; the parser has already stopped anything past Python's stack)."""
    stack = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        children = item.values() if isinstance(item, dict) else item
        for child in children:
            if isinstance(child, dict | list):
                if depth + 1 > MAX_DEPTH:
                    return True
                stack.append((child, depth + 1))
    return False


def loads(text: str | bytes) -> Any:
    """``text`` parsed as JSON; InputError, naming the fault, if it is not JSON, gives a
    key twice in one object, or nests deeper than :data:`MAX_DEPTH`."""
    try:
        value = json.loads(text, object_pairs_hook=_no_repeated_keys)
    except json.JSONDecodeError as e:
        raise InputError(f"not valid JSON: {e.msg} (character {e.pos + 1})") from None
    except UnicodeDecodeError:
        raise InputError("not valid JSON: not UTF-8 text") from None
    except _RepeatedKey as e:
        raise InputError(f"key {e.key!r} appears twice in one object") from None
    except RecursionError:
        raise InputError(f"nested more than {MAX_DEPTH} levels deep") from None
    if isinstance(value, dict | list) and _too_deep(value):
        raise InputError(f"nested more than {MAX_DEPTH} levels deep")
    return value
