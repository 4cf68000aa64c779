#!/usr/bin/env python3
"""Regenerate the seed corpora in seeds/header_scan/ and seeds/dimse_command/.

Hand-built data sets (explicit VR LE with sequences, a UN of undefined length and
encapsulated pixel data; the same in implicit VR LE, explicit VR BE and deflated), plus,
when DCMTK's dump2dcm is installed, the data sets (file meta group stripped) of small files
it writes from seeds/dcmtk.dump in each transfer syntax.

header_scan seeds are: one byte selecting the transfer syntax (0 implicit LE, 1 explicit
LE, 2 explicit BE, 3 deflated), one byte selecting the chunk size, then the data set.

Usage: python3 seeds/make_seeds.py   (from daemon/fuzz/)
"""
import os
import shutil
import struct
import subprocess
import tempfile
import zlib

HERE = os.path.dirname(os.path.abspath(__file__))
UNDEF = 0xFFFFFFFF
LONG_VRS = {b"OB", b"OD", b"OF", b"OL", b"OV", b"OW", b"SQ", b"UC", b"UN", b"UR", b"UT", b"SV", b"UV"}
IMPLICIT, EXPLICIT_LE, EXPLICIT_BE, DEFLATED = 0, 1, 2, 3


class Enc:
    """Element writer for one encoding."""

    def __init__(self, explicit, big):
        self.explicit, self.big = explicit, big
        self.o = ">" if big else "<"

    def tag(self, tag):
        return struct.pack(self.o + "HH", tag >> 16, tag & 0xFFFF)

    def el(self, tag, vr, value, length=None):
        n = len(value) if length is None else length
        if not self.explicit:
            return self.tag(tag) + struct.pack(self.o + "I", n) + value
        if vr in LONG_VRS:
            return self.tag(tag) + vr + b"\0\0" + struct.pack(self.o + "I", n) + value
        return self.tag(tag) + vr + struct.pack(self.o + "H", n) + value

    def raw(self, tag, n):
        """Item / delimiter header: tag and 4-byte length, never a VR."""
        return self.tag(tag) + struct.pack(self.o + "I", n)

    def item(self, body, defined=True):
        if defined:
            return self.raw(0xFFFEE000, len(body)) + body
        return self.raw(0xFFFEE000, UNDEF) + body + self.raw(0xFFFEE00D, 0)

    def seq(self, tag, items, defined=True):
        body = b"".join(items)
        if defined:
            return self.el(tag, b"SQ", body)
        return self.el(tag, b"SQ", body, UNDEF) + self.raw(0xFFFEE0DD, 0)


def pad(s, fill=b" "):
    b = s.encode("latin-1") if isinstance(s, str) else s
    return b + fill if len(b) % 2 else b


def dataset(e, pixels="encapsulated"):
    d = b""
    d += e.el(0x00080005, b"CS", pad("ISO_IR 100"))
    d += e.el(0x00080016, b"UI", pad("1.2.840.10008.5.1.4.1.1.7", b"\0"))
    d += e.el(0x00080018, b"UI", pad("1.2.826.0.1.3680043.2.1143.1.1.1", b"\0"))
    d += e.el(0x00080020, b"DA", b"20240131")
    d += e.el(0x00080030, b"TM", pad("101500"))
    d += e.el(0x00080050, b"SH", pad("ACC0001"))
    d += e.el(0x00080060, b"CS", b"OT")
    # Referenced Image Sequence, defined length, one defined-length item
    d += e.seq(0x00081140, [e.item(e.el(0x00081150, b"UI", pad("1.2.840.10008.5.1.4.1.1.7", b"\0"))
                                   + e.el(0x00081155, b"UI", pad("1.2.3.4.5", b"\0")))])
    d += e.el(0x00081030, b"LO", pad("Fuzz study"))
    d += e.el(0x0008103E, b"LO", pad("Fuzz series"))
    # Referenced Study Sequence, undefined length, undefined-length item holding a nested
    # undefined-length sequence and an empty defined-length item
    inner = e.seq(0x00081115, [e.item(e.el(0x00081155, b"UI", pad("1.2.9", b"\0")), defined=False)],
                  defined=False)
    d += e.seq(0x00081110, [e.item(e.el(0x00081155, b"UI", pad("1.2.8", b"\0")) + inner, defined=False),
                            e.item(b"")], defined=False)
    d += e.el(0x00100010, b"PN", pad("Test^J\xf8rgen"))
    d += e.el(0x00100020, b"LO", pad("PID-1"))
    d += e.el(0x0020000D, b"UI", pad("1.2.826.0.1.3680043.2.1143.1", b"\0"))
    d += e.el(0x0020000E, b"UI", pad("1.2.826.0.1.3680043.2.1143.1.1", b"\0"))
    d += e.el(0x00200011, b"IS", pad("3"))
    d += e.el(0x00280002, b"US", struct.pack(e.o + "H", 1))
    d += e.el(0x00280008, b"IS", pad("2"))
    d += e.el(0x00280010, b"US", struct.pack(e.o + "H", 4))
    d += e.el(0x00280011, b"US", struct.pack(e.o + "H", 4))
    if e.explicit and not e.big:
        # private UN of undefined length: an implicit VR LE sequence inside (PS3.5 6.2.2)
        imp = Enc(False, False)
        un_body = imp.item(imp.el(0x00091002, b"LO", pad("private")), defined=False)
        d += e.el(0x00091010, b"UN", un_body, UNDEF) + imp.raw(0xFFFEE0DD, 0)
    if pixels == "encapsulated":
        frags = e.raw(0xFFFEE000, 0)  # empty basic offset table
        frags += e.raw(0xFFFEE000, 8) + bytes(range(8))
        frags += e.raw(0xFFFEE000, 6) + b"\xff\xd8\xff\xd9\0\0"
        d += e.el(0x7FE00010, b"OB", frags, UNDEF) + e.raw(0xFFFEE0DD, 0)
    else:
        d += e.el(0x7FE00010, b"OW", bytes(32))
    # a trailing element after pixel data (not kept: past pixels)
    d += e.el(0xFFFCFFFC, b"OB", b"\0\0")
    return d


def deflate(b):
    c = zlib.compressobj(9, zlib.DEFLATED, -15)
    out = c.compress(b) + c.flush()
    return out + b"\0" if len(out) % 2 else out


def strip_meta(path):
    """Data set bytes after the preamble and the (explicit VR LE) file meta group."""
    b = open(path, "rb").read()
    assert b[128:132] == b"DICM", path
    pos = 132
    while pos + 8 <= len(b):
        group = struct.unpack_from("<H", b, pos)[0]
        if group != 0x0002:
            break
        vr = b[pos + 4:pos + 6]
        if vr in LONG_VRS:
            n = struct.unpack_from("<I", b, pos + 8)[0]
            pos += 12 + n
        else:
            n = struct.unpack_from("<H", b, pos + 6)[0]
            pos += 8 + n
    return b[pos:]


def write(target, name, data):
    d = os.path.join(HERE, target)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, name), "wb") as f:
        f.write(data)


def header_seeds():
    le, be, imp = Enc(True, False), Enc(True, True), Enc(False, False)
    # chunk byte: 0 -> 1 byte chunks, 6 -> 7, 250 -> 256 KiB (one chunk)
    write("header_scan", "explicit_le_encapsulated", bytes([EXPLICIT_LE, 6]) + dataset(le))
    write("header_scan", "explicit_le_native", bytes([EXPLICIT_LE, 0]) + dataset(le, "native"))
    write("header_scan", "implicit_le", bytes([IMPLICIT, 12]) + dataset(imp, "native"))
    write("header_scan", "implicit_le_encapsulated", bytes([IMPLICIT, 250]) + dataset(imp))
    write("header_scan", "explicit_be", bytes([EXPLICIT_BE, 4]) + dataset(be, "native"))
    write("header_scan", "deflated", bytes([DEFLATED, 9]) + deflate(dataset(le)))
    write("header_scan", "deflated_one_chunk", bytes([DEFLATED, 250]) + deflate(dataset(le, "native")))


def dcmtk_seeds():
    if shutil.which("dump2dcm") is None:
        print("dump2dcm not found: DCMTK seeds skipped")
        return
    dump = os.path.join(HERE, "dcmtk.dump")
    with tempfile.TemporaryDirectory() as tmp:
        for flag, ts, name in [("+te", EXPLICIT_LE, "dcmtk_explicit_le"),
                               ("+ti", IMPLICIT, "dcmtk_implicit_le"),
                               ("+tb", EXPLICIT_BE, "dcmtk_explicit_be"),
                               ("+td", DEFLATED, "dcmtk_deflated")]:
            out = os.path.join(tmp, name + ".dcm")
            subprocess.run(["dump2dcm", "-q", "+g", flag, dump, out], check=True)
            write("header_scan", name, bytes([ts, 30]) + strip_meta(out))


def us(elem, v):
    return struct.pack("<HHI", 0, elem, 2) + struct.pack("<H", v)


def ui(elem, s):
    v = pad(s, b"\0")
    return struct.pack("<HHI", 0, elem, len(v)) + v


def command(*elems):
    body = b"".join(elems)
    return struct.pack("<HHII", 0, 0, 4, len(body)) + body


def dimse_seeds():
    write("dimse_command", "c_echo_rq", command(ui(0x0002, "1.2.840.10008.1.1"), us(0x0100, 0x0030),
                                                us(0x0110, 1), us(0x0800, 0x0101)))
    write("dimse_command", "c_store_rq", command(ui(0x0002, "1.2.840.10008.5.1.4.1.1.7"), us(0x0100, 0x0001),
                                                 us(0x0110, 7), us(0x0700, 0), us(0x0800, 0x0000),
                                                 ui(0x1000, "1.2.826.0.1.3680043.2.1143.1.1.1"),
                                                 ui(0x1030, "STORESCU"), us(0x1031, 3)))
    write("dimse_command", "c_store_rsp", command(ui(0x0002, "1.2.840.10008.5.1.4.1.1.7"), us(0x0100, 0x8001),
                                                  us(0x0120, 7), us(0x0800, 0x0101), us(0x0900, 0),
                                                  ui(0x1000, "1.2.3.4")))
    write("dimse_command", "c_cancel_rq", command(us(0x0100, 0x0FFF), us(0x0120, 7), us(0x0800, 0x0101)))


if __name__ == "__main__":
    header_seeds()
    dcmtk_seeds()
    dimse_seeds()
