"""Prints the expectations of src/owner.rs's `python_str_and_owner_hash_match_python` test.

For each JSON text below: `str(json.loads(text))` and the owner hash the seed gives a run
whose `metadata.user_id` is that value (`resolve_isolation_owner` then `hash_runtime_owner`,
imported from the seed itself), as Rust tuples `(json_text, str, hash)`. Run from the
repository root:

    python3 bench/seed/owner_cases.py

and paste its output into the test's table. The JSON texts under REFUSED are the ones the
gateway answers 400 for; their Python results are printed as comments.
"""

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import browser_runtime_manager as seed  # noqa: E402

ACCEPTED = [
    # integers beyond 64 bits, and -0
    "123456789012345678901234567890",
    "-123456789012345678901234567890",
    "18446744073709551616",
    "-9223372036854775809",
    "-0",
    "0",
    # floats that overflow or underflow
    "1e400",
    "-1e400",
    "1E400",
    "1e-400",
    "-1e-400",
    "1E5",
    # objects: order of the text, duplicates (last value at the first position), nesting
    '{"a": 1, "b": [1, 2.5, null, true, "x"]}',
    '{"b": 1, "a": [], "b": {"z": false, "y": -0}, "c": {}}',
    '{"outer": {"inner": {"deep": [[], [{}], -1e400]}}}',
    "{}",
    "[]",
    # lists: nested scalars, floats as repr prints them
    "[true, false, null, 0, -0, 18446744073709551616]",
    "[1e16, 1.5e-5, 0.0001, -0.0, 1e400, 123.0, 1.2345678901234567e300]",
    # strings inside: each quote style and the escapes
    '["it\'s"]',
    '["say \\"hi\\""]',
    '["both \' and \\""]',
    '{"k\\n": "a\\tb\\\\c\\rd"}',
    '["\\u007f\\u0000\\u001b\\u001f"]',
    '["\\u0080\\u009f\\u00a0\\u00ad\\u0085"]',
    '["\\u00e9t\\u00e9", "\\u00a1\\u00ff", "caf\\u00e9"]',
    '{"\\u00e9": "\\u00a0"}',
    # strings at the top level are str() of themselves: any character, stripped
    '"\\ud83d\\ude00"',
    '"\\u00e9t\\u00e9"',
    '" \\u200b "',
    '" \\u00a0x\\u3000 "',
    '"\\u001c alice \\u001f"',
]

REFUSED = [
    '["\\ud83d\\ude00"]',
    '["\\u200b"]',
    '{"\\u0100": 1}',
    '["\\ud83e\\udee8"]',
]


def rust(text: str) -> str:
    """A Rust string literal of `text`: raw when it is all printable, else with escapes."""
    if text.isprintable() and '"#' not in text:
        return 'r#"' + text + '"#' if '"' in text or "\\" in text else '"' + text + '"'
    out = []
    for ch in text:
        if ch in '"\\':
            out.append("\\" + ch)
        elif ch.isprintable():
            out.append(ch)
        else:
            out.append("\\u{%x}" % ord(ch))
    return '"' + "".join(out) + '"'


def owner_hash(value) -> str:
    owner = seed.resolve_isolation_owner("docker-per-principal", None, {"user_id": value})
    return seed.hash_runtime_owner(owner)


for text in ACCEPTED:
    value = json.loads(text)
    print(f"({rust(text)}, {rust(str(value))}, {rust(owner_hash(value))}),")
for sign in ("", "-"):
    print(f'// "{sign}9" * 4300: {owner_hash(json.loads(sign + "9" * 4300))}')
    try:
        json.loads(sign + "9" * 4301)
    except ValueError as error:
        print(f'// "{sign}9" * 4301: ValueError: {str(error)[:48]}')
for text in REFUSED:
    value = json.loads(text)
    print(f"// refused {rust(text)}: Python {sys.version.split()[0]} says {rust(str(value))}")
