#!/usr/bin/env python3
"""De-identify a directory tree with pydicom's `deid` and its default recipe.

Driver for bench/deid.sh (issue 3):

    python deid_pydeid.py IN OUT

Every file under IN is found with deid's own `get_files` (which also checks that each one
is DICOM), de-identified by `replace_identifiers` with the library's default recipe
(`DeidRecipe()`, i.e. deid's bundled `deid.dicom`: header REMOVE/ADD actions; its pixel
filters only flag images, they are not applied here) and saved. The directory structure
below IN is kept: the files of each input directory go to the same relative directory
under OUT, as `replace_identifiers` saves a file under its own base name into one output
folder per call. One process, one thread, as the library works.

Prints "N de-identified, M failed" (M counts files that get_files found but that were
not written) and exits non-zero if M > 0 or nothing was found.
"""

import logging
import os
import sys
from collections import defaultdict


def main(argv):
    if len(argv) != 3:
        print("usage: deid_pydeid.py IN OUT", file=sys.stderr)
        return 2
    src, dst = os.path.abspath(argv[1]), os.path.abspath(argv[2])
    if not os.path.isdir(src):
        print(f"deid_pydeid.py: {src} is not a directory", file=sys.stderr)
        return 2

    # deid's own logger prints everything up to debug level by default, including a
    # warning per call for the default recipe and per lookup variable without a value
    # (var:entity_id ...); keep errors only (must be set before deid is imported).
    # pydicom's warnings go through `logging`: silenced as well.
    os.environ.setdefault("MESSAGELEVEL", "ERROR")
    logging.disable(logging.WARNING)

    from deid.config import DeidRecipe
    from deid.dicom import get_files, replace_identifiers

    recipe = DeidRecipe()  # the default recipe bundled with deid

    by_dir = defaultdict(list)
    found = 0
    for path in get_files(src):
        by_dir[os.path.relpath(os.path.dirname(path), src)].append(path)
        found += 1
    if found == 0:
        print(f"deid_pydeid.py: no DICOM files under {src}", file=sys.stderr)
        return 1

    written = 0
    for rel, files in sorted(by_dir.items()):
        out_dir = os.path.normpath(os.path.join(dst, rel))
        os.makedirs(out_dir, exist_ok=True)
        files.sort()
        result = replace_identifiers(
            dicom_files=files, deid=recipe, save=True, output_folder=out_dir
        )
        written += sum(1 for r in result if r and os.path.isfile(r))

    failed = found - written
    print(f"{written} de-identified, {failed} failed")
    return 0 if failed == 0 else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv))
