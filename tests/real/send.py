#!/usr/bin/env python3
"""Send files by C-STORE with pynetdicom, for the files DCMTK's storescu cannot read.

Usage: send.py HOST PORT CALLING_AE CALLED_AE FILE...

Each file goes as stored: pynetdicom streams its data set bytes in the transfer syntax its
file meta names (one presentation context per SOP class and transfer syntax, one association
for all). Prints one line per file: `NAME STATUS` with the status in hex (`none` when no
response came, `error: ...` when it could not be sent), and exits non-zero unless every file
got 0x0000.
"""

import sys
import warnings

import pydicom
from pynetdicom import AE

warnings.filterwarnings("ignore")
pydicom.config.settings.reading_validation_mode = pydicom.config.IGNORE


def main():
    host, port, calling, called, *files = sys.argv[1:]
    data = [(f, pydicom.dcmread(f, stop_before_pixels=True)) for f in files]
    ae = AE(ae_title=calling)
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = 60
    contexts = sorted(
        {(str(ds.file_meta.MediaStorageSOPClassUID), str(ds.file_meta.TransferSyntaxUID)) for _, ds in data}
    )
    for sop_class, ts in contexts:
        ae.add_requested_context(sop_class, ts)
    assoc = ae.associate(host, int(port), ae_title=called)
    if not assoc.is_established:
        sys.exit("send.py: association not established")
    ok = True
    for f, ds in data:
        try:
            st = assoc.send_c_store(f)  # a path: the bytes as stored, not re-encoded
            status = f"0x{st.Status:04x}" if st and "Status" in st else "none"
        except Exception as e:
            status = f"error:{type(e).__name__}"
        if not assoc.is_established:
            assoc = ae.associate(host, int(port), ae_title=called)
        ok &= status == "0x0000"
        print(f"{f} {status}", flush=True)
    assoc.release()
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
