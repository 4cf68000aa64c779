"""A research PACS that refuses duplicates, for daemon/tests/pipeline.rs (issue 14, item 7).

A pynetdicom Storage SCP and Query/Retrieve (C-FIND) SCP on 127.0.0.1 that, like some PACS
in the field, answers 0x0111 (Duplicate SOP Instance) to an instance it already holds instead
of success. It answers C-FIND at study (NumberOfStudyRelatedInstances), series and image
level from what it holds. Each store takes --delay-ms, so that a test can kill the sender in
the middle of an association.

Usage: python dup_pacs.py PORT AE_TITLE STATE_DIR [--delay-ms N]

STATE_DIR gets `held.txt` (one SOP Instance UID per stored instance), `dups.txt` (one line
per 0x0111 answer) and `ready` once it listens.
"""

import argparse
import os
import threading
import time

from pydicom.dataset import Dataset
from pynetdicom import AE, evt, AllStoragePresentationContexts
from pynetdicom.sop_class import (
    StudyRootQueryRetrieveInformationModelFind,
    PatientRootQueryRetrieveInformationModelFind,
    Verification,
)

ALL_SYNTAXES = [
    "1.2.840.10008.1.2",
    "1.2.840.10008.1.2.1",
    "1.2.840.10008.1.2.2",
    "1.2.840.10008.1.2.1.99",
    "1.2.840.10008.1.2.4.50",
    "1.2.840.10008.1.2.4.51",
    "1.2.840.10008.1.2.4.57",
    "1.2.840.10008.1.2.4.70",
    "1.2.840.10008.1.2.4.80",
    "1.2.840.10008.1.2.4.81",
    "1.2.840.10008.1.2.4.90",
    "1.2.840.10008.1.2.4.91",
    "1.2.840.10008.1.2.5",
]


def main():
    p = argparse.ArgumentParser()
    p.add_argument("port", type=int)
    p.add_argument("ae")
    p.add_argument("state")
    p.add_argument("--delay-ms", type=int, default=0)
    a = p.parse_args()
    os.makedirs(a.state, exist_ok=True)
    lock = threading.Lock()
    # study UID -> series UID -> set of SOP Instance UIDs
    held = {}
    seen = set()

    def append(name, line):
        with open(os.path.join(a.state, name), "a") as f:
            f.write(line + "\n")
            f.flush()

    def on_store(event):
        ds = event.dataset
        sop = str(ds.SOPInstanceUID)
        time.sleep(a.delay_ms / 1000.0)
        with lock:
            if sop in seen:
                append("dups.txt", sop)
                return 0x0111
            seen.add(sop)
            held.setdefault(str(ds.StudyInstanceUID), {}).setdefault(
                str(ds.SeriesInstanceUID), set()
            ).add(sop)
            append("held.txt", sop)
        return 0x0000

    def on_find(event):
        q = event.identifier
        level = str(q.get("QueryRetrieveLevel", ""))
        study = str(q.get("StudyInstanceUID", ""))
        with lock:
            series = {k: set(v) for k, v in held.get(study, {}).items()}
        if level == "STUDY":
            if series:
                r = Dataset()
                r.QueryRetrieveLevel = "STUDY"
                r.StudyInstanceUID = study
                r.NumberOfStudyRelatedInstances = sum(len(v) for v in series.values())
                yield 0xFF00, r
        elif level == "SERIES":
            for s, sops in series.items():
                r = Dataset()
                r.QueryRetrieveLevel = "SERIES"
                r.StudyInstanceUID = study
                r.SeriesInstanceUID = s
                r.NumberOfSeriesRelatedInstances = len(sops)
                yield 0xFF00, r
        elif level == "IMAGE":
            want = str(q.get("SeriesInstanceUID", ""))
            for s, sops in series.items():
                if want and want != s:
                    continue
                for sop in sorted(sops):
                    r = Dataset()
                    r.QueryRetrieveLevel = "IMAGE"
                    r.StudyInstanceUID = study
                    r.SeriesInstanceUID = s
                    r.SOPInstanceUID = sop
                    yield 0xFF00, r

    ae = AE(ae_title=a.ae)
    ae.maximum_associations = 16
    for cx in AllStoragePresentationContexts:
        ae.add_supported_context(cx.abstract_syntax, ALL_SYNTAXES)
    ae.add_supported_context(Verification)
    ae.add_supported_context(StudyRootQueryRetrieveInformationModelFind)
    ae.add_supported_context(PatientRootQueryRetrieveInformationModelFind)
    server = ae.start_server(
        ("127.0.0.1", a.port),
        block=False,
        evt_handlers=[(evt.EVT_C_STORE, on_store), (evt.EVT_C_FIND, on_find)],
    )
    open(os.path.join(a.state, "ready"), "w").close()
    try:
        while True:
            time.sleep(3600)
    finally:
        server.shutdown()


if __name__ == "__main__":
    main()
