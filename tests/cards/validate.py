"""Checks model cards against docs/card.schema.json (JSON Schema 2020-12).

Usage: validate.py SCHEMA CARD...
Prints one line per card checked; exits 1 listing every violation. Also checks that the
schema refuses a card whose tensor shape is not a size or "batch" (the schema can fail).
"""

import copy
import json
import sys

import jsonschema

schema = json.load(open(sys.argv[1]))
jsonschema.Draft202012Validator.check_schema(schema)
validator = jsonschema.Draft202012Validator(schema)
failures = []
cards = []
for path in sys.argv[2:]:
    card = json.load(open(path))
    cards.append(card)
    errors = sorted(validator.iter_errors(card), key=lambda e: list(e.path))
    for error in errors:
        failures.append(f"{path}: {'/'.join(map(str, error.path))}: {error.message}")
    print(f"{path}: {'valid' if not errors else f'{len(errors)} violation(s)'}")

broken = copy.deepcopy(cards[0])
broken["onnx"]["inputs"][0]["shape"][1] = "twelve"
if validator.is_valid(broken):
    failures.append("the schema accepts a shape entry 'twelve'")
if failures:
    print("\n".join(failures))
    sys.exit(1)
