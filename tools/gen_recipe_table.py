"""Writes docs/recipes.md: every UPGE recipe and its four parts, generated from the code.

python tools/gen_recipe_table.py          # rewrite docs/recipes.md
python tools/gen_recipe_table.py --check  # exit 1 if docs/recipes.md is stale
"""

import pathlib
import sys

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from upt_jax.upge import recipe_table  # noqa: E402

PATH = ROOT / "docs" / "recipes.md"


def main(argv):
    text = recipe_table()
    if "--check" in argv:
        if not PATH.exists() or PATH.read_text() != text:
            print(f"{PATH} is stale: run python tools/gen_recipe_table.py", file=sys.stderr)
            return 1
        return 0
    PATH.write_text(text)
    print(f"wrote {PATH}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
