"""Regenerate vectors.json (a deliberate protocol change only)."""

import json

from tests.vectors.frames import PATH, build

PATH.write_text(json.dumps(build(), indent=1, ensure_ascii=False) + "\n")
print(f"wrote {PATH}")
